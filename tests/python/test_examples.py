"""The Python examples work as documented (the server example is tested in test_server.py)."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from conftest import EXAMPLES_DIR, MockConn, msg


@pytest.fixture(scope="module")
def validation():
    spec = importlib.util.spec_from_file_location("validation_example", EXAMPLES_DIR / "validation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the models' annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("which", ["validate_with_pydantic", "validate_with_jsonschema"])
def test_schema_validation(validation, which):
    errors = []
    engine = validation.make_engine(getattr(validation, which), on_error=lambda e, c: errors.append((e, c)))
    try:
        conn = MockConn()
        engine.handle_open(conn)
        engine.handle_message(conn, msg("increment", amount=5))
        assert engine.get_state() == {"counter": 5} and engine.get_version() == 1
        engine.handle_message(conn, msg("increment", amount="five"))
        engine.handle_message(conn, msg("launch"))
        engine.handle_message(conn, json.dumps({"amount": 1}))
        assert engine.get_state() == {"counter": 5} and engine.get_version() == 1
        assert len(errors) == 3
        assert all("validat" in context for _, context in errors)
        engine.handle_message(conn, msg("reset"))
        assert engine.get_state() == {"counter": 0}
    finally:
        engine.dispose()


def test_validation_example_runs(validation, capsys):
    validation.main()
    out = capsys.readouterr().out
    assert "[pydantic]" in out and "[jsonschema]" in out and "refused" in out
