"""The web app under hostile or failing conditions: chunked and oversized bodies, deeply nested JSON, a
database outage (SQLite in-process, PostgreSQL behind a cuttable proxy with a real server), and retried
answers whose first reply was lost."""

from __future__ import annotations

import logging
import os
import socket
import time
from urllib.parse import urlparse

import httpx
import pytest
from fastapi.testclient import TestClient

from lego_inversion.study import storage as storage_mod
from lego_inversion.study.app import MAX_BODY, create_app
from lego_inversion.study.storage import open_storage

from .conftest import PG_ENV
from .server import Server, TcpProxy


@pytest.fixture
def client(small_study, tmp_path):
    (tmp_path / "db").mkdir()  # its own folder, so that a test can take the database away
    store = open_storage(str(tmp_path / "db" / "answers.sqlite"), small_study.id)
    with TestClient(create_app(small_study, store)) as c:
        c.study, c.store, c.token = small_study, store, small_study.rater_tokens["r001"]
        yield c
    store.close()


def _answer_body(item: str, pad: int) -> bytes:
    return b'{"item": "%s", "side": "left", "pad": "%s"}' % (item.encode(), b"x" * pad)


def test_chunked_body_over_the_limit_is_413(client):
    """No Content-Length (chunked transfer): the bytes actually read are counted."""
    item = client.study.order["r001"][0][0]

    def chunks(total: int):
        body = _answer_body(item, total)
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]

    r = client.post(f"/api/r/{client.token}/answer", content=chunks(MAX_BODY + 1),
                    headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers and r.request.headers["transfer-encoding"] == "chunked"
    assert r.status_code == 413 and "too large" in r.json()["error"] and r.headers["connection"] == "close"
    assert r.headers["x-frame-options"] == "DENY"  # the security headers are on refusals too
    form = client.post(f"/r/{client.token}/answer", content=chunks(MAX_BODY + 1),
                       headers={"content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 413
    assert client.store.count() == 0
    small = client.post(f"/api/r/{client.token}/answer", content=chunks(MAX_BODY // 2),
                        headers={"content-type": "application/json"})  # chunked but within the limit: accepted
    assert small.status_code == 200 and small.json()["stored"] is True


def test_deeply_nested_json_is_400(client):
    body = b"[" * 8000 + b"]" * 8000
    assert len(body) <= MAX_BODY  # refused for its nesting, not its size
    r = client.post(f"/api/r/{client.token}/answer", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    deep_object = b'{"a":' * 2500 + b"1" + b"}" * 2500
    assert len(deep_object) <= MAX_BODY
    r = client.post(f"/api/r/{client.token}/answer", content=deep_object, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert client.store.count() == 0


def test_retried_answer_says_which_side_is_stored(client):
    """A client whose first reply was lost can tell "already stored, same answer" from "conflicting answer"."""
    study, token = client.study, client.token
    item, swapped = study.order["r001"][0]
    url = f"/api/r/{token}/answer"
    first = client.post(url, json={"item": item, "side": "left"}).json()
    assert first["stored"] is True and first["choice"] == "left" and first["same"] is True
    retry = client.post(url, json={"item": item, "side": "left"}).json()
    assert (retry["stored"], retry["choice"], retry["same"]) == (False, "left", True)
    other = client.post(url, json={"item": item, "side": "right"}).json()
    assert (other["stored"], other["choice"], other["same"]) == (False, "left", False)
    assert other["answered"] == 1
    kept = client.store.answers("r001")
    assert [(a.side, a.slot) for a in kept] == [("left", "b" if swapped else "a")]


def test_sqlite_outage_is_503_with_one_log_line_and_recovers(client, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(storage_mod, "RETRY_SLEEP", 0.0)
    study, token = client.study, client.token
    items = [i for i, _ in study.order["r001"]]
    assert client.post(f"/api/r/{token}/answer", json={"item": items[0], "side": "left"}).status_code == 200
    (tmp_path / "db").rename(tmp_path / "db_away")  # the volume holding the database goes away ...
    client.store.close()  # ... and the open connections with it
    caplog.set_level(logging.WARNING, logger="lego_inversion.study")
    down_api = client.post(f"/api/r/{token}/answer", json={"item": items[1], "side": "left"})
    down_page = client.get(f"/r/{token}")
    assert down_api.status_code == 503 and "unavailable" in down_api.json()["error"]
    assert down_api.headers["retry-after"] == "10"
    assert down_page.status_code == 503 and "try again" in down_page.text and "Traceback" not in down_page.text
    records = [r for r in caplog.records if r.name == "lego_inversion.study"]
    assert len(records) == 2 and all(r.exc_info is None and "\n" not in r.getMessage() for r in records)
    assert "answered 503" in records[0].getMessage() and token not in records[0].getMessage()
    (tmp_path / "db_away").rename(tmp_path / "db")  # back
    back = client.post(f"/api/r/{token}/answer", json={"item": items[1], "side": "left"})
    assert back.status_code == 200 and back.json()["stored"] is True and back.json()["answered"] == 2


@pytest.mark.skipif(not os.environ.get(PG_ENV), reason=f"{PG_ENV} is not set: `source scripts/ci_services.sh`")
def test_postgres_outage_real_server_503_then_recovers(small_study, tmp_path):
    """A real `lego study serve` on PostgreSQL behind a proxy that cuts every connection and refuses new ones."""
    pg = urlparse(os.environ[PG_ENV])
    proxy = TcpProxy(pg.hostname, pg.port)
    db = os.environ[PG_ENV].replace(f"{pg.hostname}:{pg.port}", f"127.0.0.1:{proxy.port}")
    server = Server(small_study.root, db, tmp_path / "server.log")
    token = small_study.rater_tokens["r001"]
    items = [i for i, _ in small_study.order["r001"]]
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.post(f"/api/r/{token}/answer", json={"item": items[0], "side": "left"}).status_code == 200
            proxy.down()
            statuses = [http.post(f"/api/r/{token}/answer", json={"item": items[1], "side": "left"}).status_code,
                        http.get(f"/api/r/{token}").status_code, http.get(f"/r/{token}").status_code]
            assert statuses == [503, 503, 503]
            assert http.get("/healthz").status_code == 200  # alive, just without its database
            proxy.up()
            back = http.post(f"/api/r/{token}/answer", json={"item": items[1], "side": "left"})
            assert back.status_code == 200 and back.json()["stored"] is True and back.json()["answered"] == 2
    finally:
        server.stop()
        proxy.close()
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if "answered 503" in line]
    assert len(lines) == 3 and all("cannot connect" in line or "answer storage" in line for line in lines)
    store = open_storage(os.environ[PG_ENV], small_study.id)
    assert {a.item for a in store.answers("r001")} == set(items[:2])
    store.close()


def test_real_server_stops_reading_a_chunked_body_at_the_limit(small_study, tmp_path):
    """Raw HTTP/1.1: headers and 64 KB of a chunked body that never ends. The server must answer 413 without
    waiting for the rest (a server that reads the whole body first would hang here)."""
    server = Server(small_study.root, str(tmp_path / "answers.sqlite"), tmp_path / "server.log")
    token = small_study.rater_tokens["r001"]
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
            sock.sendall(f"POST /api/r/{token}/answer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n".encode())
            chunk = b"x" * 4096
            for _ in range(16):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            t0 = time.monotonic()
            head = b""
            while b"\r\n\r\n" not in head:
                data = sock.recv(4096)
                if not data:
                    break
                head += data
        assert head.startswith(b"HTTP/1.1 413") and time.monotonic() - t0 < 10
        assert httpx.get(server.url + "/healthz").json() == {"ok": True}  # and it keeps serving
    finally:
        server.stop()
    assert "Traceback" not in (tmp_path / "server.log").read_text()
