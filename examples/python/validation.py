#!/usr/bin/env python3
"""Validating messages with a schema library, as the original does with zod.

Two validators for the same messages: one with pydantic (models, a discriminated union) and one
with jsonschema. Either is passed as ``validate=``: it gets the parsed message and returns it
(pydantic models are turned back into plain data by syncengine) or raises, and a message that
raises never reaches a handler: state and version stay as they were and on_error gets the reason.

    python3 examples/python/validation.py
"""

import json
from typing import Annotated, Literal, Union

import jsonschema
from pydantic import BaseModel, Field, TypeAdapter

import syncengine


# ---- pydantic: one model per message type, a union discriminated by "type" ---------------------
class Increment(BaseModel):
    type: Literal["increment"]
    amount: float


class Reset(BaseModel):
    type: Literal["reset"]


# The zod discriminatedUnion of the seed: "type" picks the model.
Message = TypeAdapter(Annotated[Union[Increment, Reset], Field(discriminator="type")])


def validate_with_pydantic(raw):
    return Message.validate_python(raw)


# ---- jsonschema: the same contract as a JSON Schema ------------------------------------------
MESSAGE_SCHEMA = {
    "oneOf": [
        {
            "type": "object",
            "properties": {"type": {"const": "increment"}, "amount": {"type": "number"}},
            "required": ["type", "amount"],
        },
        {"type": "object", "properties": {"type": {"const": "reset"}}, "required": ["type"]},
    ]
}
_validator = jsonschema.Draft202012Validator(MESSAGE_SCHEMA)


def validate_with_jsonschema(raw):
    _validator.validate(raw)
    return raw


# ---- handlers -------------------------------------------------------------------------------
def increment(conn, message, get_state, set_state):
    state = get_state()
    state["counter"] += message["amount"]
    set_state(state)


def reset(conn, message, get_state, set_state):
    set_state({"counter": 0})


def make_engine(validate, on_error=None):
    return syncengine.SyncEngine(
        initial_state={"counter": 0},
        handlers={"increment": increment, "reset": reset},
        validate=validate,
        hooks={"on_error": on_error} if on_error else None,
    )


class PrintConn:
    """A stand-in connection that prints what the engine sends."""

    def send(self, text):
        print("  ->", text)

    def close(self):
        pass


def main() -> None:
    for name, validate in (("pydantic", validate_with_pydantic), ("jsonschema", validate_with_jsonschema)):
        print(f"[{name}]")
        engine = make_engine(validate, on_error=lambda err, ctx: print(f"  refused ({ctx}): {err.detail.splitlines()[0]}"))
        conn = PrintConn()
        engine.handle_open(conn)
        for raw in ({"type": "increment", "amount": 5}, {"type": "increment", "amount": "five"}, {"type": "reset"}, {"type": "launch"}):
            engine.handle_message(conn, json.dumps(raw))
            print(f"  {json.dumps(raw)} -> state {engine.get_state()} version {engine.get_version()}")
        engine.dispose()


if __name__ == "__main__":
    main()
