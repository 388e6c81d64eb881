"""Storage: one answer per (rater, item) enforced by the database, for SQLite and PostgreSQL alike."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from lego_inversion.errors import UserError
from lego_inversion.study.storage import PostgresStorage, SQLiteStorage, open_storage


def test_submit_is_idempotent_and_first_answer_wins(db_url, study_name):
    store = open_storage(db_url, study_name)
    assert isinstance(store, PostgresStorage if db_url.startswith("postgres") else SQLiteStorage)
    assert store.submit("r001", "p00001", "a", "left") is True
    assert store.submit("r001", "p00001", "a", "left") is False  # double click
    assert store.submit("r001", "p00001", "b", "right") is False  # a later different answer does not overwrite
    assert store.submit("r002", "p00001", "b", "right") is True
    got = {(a.rater, a.item): (a.slot, a.side) for a in store.answers()}
    assert got == {("r001", "p00001"): ("a", "left"), ("r002", "p00001"): ("b", "right")}
    assert [a.item for a in store.answers("r002")] == ["p00001"] and store.count() == 2
    with pytest.raises(ValueError):
        store.submit("r001", "p00002", "c", "left")
    store.close()
    other = open_storage(db_url, study_name + "-other")  # studies sharing a database are separate
    assert other.count() == 0
    other.close()
    again = open_storage(db_url, study_name)  # reopening (a server restart) keeps everything
    assert again.count() == 2
    again.close()


def test_database_itself_rejects_duplicates(db_url, study_name):
    """The uniqueness is a database constraint, not app logic: a raw INSERT of a duplicate fails."""
    store = open_storage(db_url, study_name)
    store.submit("r001", "p00001", "a", "left")
    raw = ("INSERT INTO study_answers (study, rater, item, slot, side, created_at) "
           f"VALUES ({store.placeholder}, 'r001', 'p00001', 'b', 'left', 0)")
    if isinstance(store, SQLiteStorage):
        with pytest.raises(sqlite3.IntegrityError):
            store._conn().execute(raw, (study_name,))
    else:
        import psycopg

        with pytest.raises(psycopg.errors.UniqueViolation):
            store._conn().execute(raw, (study_name,))
    store.close()


def test_concurrent_submits_store_exactly_one(db_url, study_name):
    """16 threads x 3 storage objects (like 3 app processes) race to answer the same 20 items."""
    stores = [open_storage(db_url, study_name) for _ in range(3)]
    results: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(20):
            ok = stores[n % 3].submit("r001", f"p{i:05d}", "ab"[n % 2], "left")
            with lock:
                results.append(ok)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 20 and len(results) == 320
    assert stores[0].count() == 20
    for s in stores:
        s.close()


def test_bad_urls_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unsupported"):
        open_storage("mysql://x@y/z", "s")
    with pytest.raises(UserError, match="does not exist"):
        open_storage(str(tmp_path / "missing" / "a.sqlite"), "s")
    (tmp_path / "junk.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(UserError, match="cannot open as an SQLite"):
        open_storage(str(tmp_path / "junk.sqlite"), "s")
    with pytest.raises(UserError, match="cannot connect") as info:
        open_storage("postgresql://nobody:secret@127.0.0.1:1/none", "s")
    assert "secret" not in str(info.value)  # the password never reaches the terminal
    assert open_storage(f"sqlite:///{tmp_path / 'b.sqlite'}", "s").count() == 0


def test_outage_is_storage_unavailable_and_a_short_blip_is_retried(db_url, study_name, tmp_path, monkeypatch):
    """Database gone: each call retries with fresh connections, then raises StorageUnavailable (one line). A
    database that is back before the last retry is not noticed at all; nothing stored is lost."""
    import types
    from urllib.parse import urlparse

    from lego_inversion.study import storage as storage_mod

    from .server import TcpProxy

    if db_url.startswith("postgres"):
        pg = urlparse(db_url)
        proxy = TcpProxy(pg.hostname, pg.port)
        store = open_storage(db_url.replace(f"{pg.hostname}:{pg.port}", f"127.0.0.1:{proxy.port}"), study_name)
        down, up = proxy.down, proxy.up
    else:
        (tmp_path / "vol").mkdir()
        store = open_storage(str(tmp_path / "vol" / "a.sqlite"), study_name)

        def down():
            (tmp_path / "vol").rename(tmp_path / "vol_away")
            store.close()  # the open connections go with the volume

        def up():
            (tmp_path / "vol_away").rename(tmp_path / "vol")

    sleeps = []
    fake_time = types.SimpleNamespace(time=storage_mod.time.time, sleep=sleeps.append)
    monkeypatch.setattr(storage_mod, "time", fake_time)
    try:
        assert store.submit("r001", "p00001", "a", "left") is True
        down()
        with pytest.raises(storage_mod.StorageUnavailable) as info:
            store.count()
        assert len(sleeps) == storage_mod.ATTEMPTS - 1 and "\n" not in str(info.value)
        assert str(info.value).endswith("running?")  # says what to check
        sleeps.clear()
        fake_time.sleep = lambda s: (sleeps.append(s), up() if len(sleeps) == storage_mod.ATTEMPTS - 1 else None)
        assert store.submit("r001", "p00002", "b", "right") is True  # the last retry reaches it
        assert len(sleeps) == storage_mod.ATTEMPTS - 1
        assert {(a.item, a.slot) for a in store.answers()} == {("p00001", "a"), ("p00002", "b")}
    finally:
        store.close()
        if db_url.startswith("postgres"):
            proxy.close()
