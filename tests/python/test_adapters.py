"""SQLite, file and custom Python adapters through the Python API (real files on disk)."""

from __future__ import annotations

import json
import sqlite3

import pytest

import syncengine
from conftest import MemoryAdapter, MockConn, increment, msg


def engine_with(make_engine, adapter, **kwargs):
    return make_engine(initial_state={"counter": 0}, handlers={"increment": increment}, adapter=adapter, **kwargs)


def test_sqlite_persists_across_engines(make_engine, tmp_path):
    path = tmp_path / "state.sqlite"
    first = engine_with(make_engine, syncengine.SQLiteAdapter(path))
    first.handle_message(MockConn(), msg("increment", amount=5))
    first.handle_message(MockConn(), msg("increment", amount=2))
    first.dispose()
    second = engine_with(make_engine, syncengine.SQLiteAdapter(str(path)))
    assert second.get_state() == {"counter": 7}
    assert second.get_version() == 2
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type='table'")}
    assert "websocket_state" in tables


def test_sqlite_custom_table_and_bad_table_name(make_engine, tmp_path):
    path = tmp_path / "db.sqlite"
    engine = engine_with(make_engine, syncengine.SQLiteAdapter(path, table_name="my_custom_websocket_table"))
    engine.set_state({"counter": 1})
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type='table'")}
    assert "my_custom_websocket_table" in tables
    with pytest.raises(syncengine.SyncValueError) as info:
        syncengine.SQLiteAdapter(path, table_name="x'; drop table y; --")
    assert info.value.status == syncengine.Status.EINVAL
    assert info.value.detail


def test_sqlite_backup(make_engine, recorder, tmp_path):
    backups = tmp_path / "backups"
    engine = engine_with(make_engine, syncengine.SQLiteAdapter(tmp_path / "db.sqlite", backups_dir=backups),
                         hooks=recorder.hooks())
    engine.set_state({"counter": 3})
    assert engine.create_backup() == syncengine.Status.OK
    files = list(backups.glob("backup-*.sqlite"))
    assert len(files) == 1
    assert recorder.count("on_backup") == 1
    stamp, version = recorder.calls["on_backup"][0]
    assert stamp > 1_600_000_000_000 and version == 1


def test_file_adapter_writes_the_original_format(make_engine, tmp_path):
    path = tmp_path / "state.json"
    engine = engine_with(make_engine, syncengine.FileAdapter(path))
    engine.handle_message(MockConn(), msg("increment", amount=4))
    record = json.loads(path.read_text())
    # the original's two members, plus the epoch of the history (docs/PROTOCOL.md), which the
    # original's reader ignores
    assert isinstance(record.pop("epoch"), str)
    assert record == {"state": {"counter": 4}, "version": 1}
    engine.dispose()
    again = engine_with(make_engine, syncengine.FileAdapter(path))
    assert again.get_state() == {"counter": 4} and again.get_version() == 1


def test_fresh_file_keeps_initial_state(make_engine, tmp_path):
    engine = make_engine(initial_state={"counter": 11}, adapter=syncengine.FileAdapter(tmp_path / "new.json"))
    assert engine.get_state() == {"counter": 11}
    assert engine.get_version() == 0


def test_file_backups(make_engine, tmp_path):
    backups = tmp_path / "backups"
    engine = engine_with(make_engine, syncengine.FileAdapter(tmp_path / "s.json", backups_dir=backups))
    engine.set_state({"counter": 2})
    engine.create_backup()
    files = list(backups.glob("backup-*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["state"] == {"counter": 2}


def test_file_without_backups_dir_cannot_back_up(make_engine, tmp_path):
    engine = engine_with(make_engine, syncengine.FileAdapter(tmp_path / "s.json"))
    assert engine.create_backup() == syncengine.Status.EUNSUPPORTED


def test_corrupt_file_is_kept_aside_and_reported(make_engine, recorder, tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{this is not json")
    engine = engine_with(make_engine, syncengine.FileAdapter(path), hooks=recorder.hooks())
    assert engine.get_state() == {"counter": 0}
    assert engine.get_version() == 0
    assert recorder.errors(), "a corrupt store must be reported"
    kept = list(tmp_path.glob("state.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text() == "{this is not json"


def test_custom_python_adapter_restores_and_saves(make_engine):
    adapter = MemoryAdapter({"counter": 40}, 6)
    engine = engine_with(make_engine, adapter)
    assert engine.get_state() == {"counter": 40}
    assert engine.get_version() == 6
    engine.handle_message(MockConn(), msg("increment", amount=2))
    assert adapter.record == {"state": {"counter": 42}, "version": 7}


def test_custom_adapter_never_saved_uses_initial_state(make_engine):
    adapter = MemoryAdapter()
    engine = make_engine(initial_state={"counter": 5}, adapter=adapter)
    assert engine.get_state() == {"counter": 5}
    assert adapter.calls == {"init": 1, "load": 1, "save": 0, "backup": 0}


def test_custom_adapter_without_init_or_backup(make_engine):
    class Minimal:
        def __init__(self):
            self.saved = None

        def load(self):
            return None

        def save(self, state, version):
            self.saved = (state, version)

    adapter = Minimal()
    engine = engine_with(make_engine, adapter)
    engine.sync()
    assert adapter.saved == ({"counter": 0}, 0)
    assert engine.create_backup() == syncengine.Status.EUNSUPPORTED


def test_manual_persist_mode_saves_only_on_sync(make_engine):
    adapter = MemoryAdapter()
    engine = engine_with(make_engine, adapter, persist_mode="manual")
    engine.handle_message(MockConn(), msg("increment", amount=1))
    assert adapter.calls["save"] == 0
    engine.sync()
    assert adapter.saved == [({"counter": 1}, 1)]
