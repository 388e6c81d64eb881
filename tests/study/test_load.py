"""Load test (loopback only, bounded): 50 concurrent raters with interleaved answers, double clicks and
retries against two real server processes sharing one database (the two clicks of a double click go to
different processes); one process is SIGKILLed and restarted mid-way. Afterwards there must be
exactly one stored answer per (rater, item), equal to what the rater clicked, and no answer may have been
acknowledged as newly stored twice."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import httpx
import pytest

from lego_inversion.study.create import CreateConfig, create_study
from lego_inversion.study.model import load_study
from lego_inversion.study.storage import open_storage

from .conftest import make_concept, make_image_set
from .server import Server

N_RATERS = 50


@pytest.fixture
def load_study_dir(tmp_path):
    concepts, subjects, seeds = ["melted", "frozen"], ["bear", "cube", "cup"], [1, 2, 3, 4, 5]
    lego = make_image_set(tmp_path / "lego", "lego", concepts, subjects, seeds, salt=1)
    ldm = make_image_set(tmp_path / "ldm", "ldm", concepts, subjects, seeds, salt=2)
    cdirs = [str(make_concept(tmp_path / f"c_{c}", c, 40 * i)) for i, c in enumerate(concepts)]
    out = tmp_path / "study"
    create_study(CreateConfig(out=str(out), sets=[str(lego), str(ldm)], concepts=cdirs, raters_per_pair=10,
                              raters=N_RATERS, attention_checks=1, seed=3))
    return out


def test_fifty_raters_no_vote_lost_or_doubled(load_study_dir, db_url, tmp_path):
    study = load_study(load_study_dir)  # its unique id keeps this run's rows apart in a shared PostgreSQL database
    expected = {(r, item): random.Random(f"{r}/{item}").choice(["left", "right"])
                for r, entries in study.order.items() for item, _ in entries}
    assert len(study.order) == N_RATERS and len(expected) == N_RATERS * (30 * 10 // N_RATERS + 2)
    servers = [Server(load_study_dir, db_url, tmp_path / f"server{i}.log") for i in range(2)]
    for server in servers:
        server.start()
    acked: Counter = Counter()  # (rater, item) -> responses saying "stored": true
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 120

    def post(client: httpx.Client, rater: str, item: str, use_form: bool, server: Server) -> None:
        """Submit until the server answers (retrying through the restart); record acknowledgements."""
        token, side = study.rater_tokens[rater], expected[(rater, item)]
        while time.monotonic() < deadline:
            try:
                if use_form:
                    r = client.post(f"{server.url}/r/{token}/answer", data={"item": item, "side": side})
                    if r.status_code == 303:
                        return
                else:
                    r = client.post(f"{server.url}/api/r/{token}/answer", json={"item": item, "side": side})
                    if r.status_code == 200:
                        with lock:
                            acked[(rater, item)] += r.json()["stored"]
                        return
                if r.status_code < 500:
                    with lock:
                        errors.append(f"{rater} {item}: HTTP {r.status_code} {r.text[:200]}")
                    return
            except httpx.HTTPError:
                pass  # server down (restart) or connection reset: retry like a browser would
            time.sleep(0.05)
        with lock:
            errors.append(f"{rater} {item}: gave up")

    def post_fresh(rater: str, item: str, use_form: bool, server: Server) -> None:
        with httpx.Client(timeout=10, follow_redirects=False) as client:
            post(client, rater, item, use_form, server)

    def rater_run(rater: str) -> None:
        rng = random.Random(rater)
        mine, other = servers[int(rater[1:]) % 2], servers[1 - int(rater[1:]) % 2]
        with httpx.Client(timeout=10, follow_redirects=False) as client:
            for item, _ in study.order[rater]:
                time.sleep(rng.uniform(0, 0.05))
                use_form = rng.random() < 0.3
                kind = rng.random()
                if kind < 0.25:  # double click: two simultaneous submits of the same answer
                    twin = threading.Thread(target=post_fresh, args=(rater, item, use_form, other))
                    twin.start()
                    post(client, rater, item, use_form, mine)
                    twin.join()
                else:
                    post(client, rater, item, use_form, mine)
                if kind > 0.85:  # retry: the same answer again, as after a timeout
                    post(client, rater, item, False, mine)

    threads = [threading.Thread(target=rater_run, args=(r,)) for r in study.order]
    try:
        for t in threads:
            t.start()
        store = open_storage(db_url, study.id)
        while store.count() < len(expected) // 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        at_kill = store.count()
        servers[0].kill()  # mid-study crash of one process ...
        assert 0 < at_kill < len(expected) and store.count() >= at_kill  # really mid-way; nothing lost
        time.sleep(0.3)
        servers[0].start()  # ... and restart on the same port; clients retry meanwhile
        for t in threads:
            t.join(timeout=max(1.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "raters did not finish in time"
    finally:
        for server in servers:
            server.stop()
    assert errors == []
    rows = store.answers()
    store.close()
    keys = Counter((a.rater, a.item) for a in rows)
    assert set(keys) == set(expected) and set(keys.values()) == {1}  # every answer once, nothing extra
    assert {(a.rater, a.item): a.side for a in rows} == expected  # the side each rater clicked
    for a in rows:  # and the slot is what was shown on that side
        assert a.slot == study.choice_to_slot(a.rater, a.item, a.side)
    assert max(acked.values()) <= 1  # never acknowledged as newly stored twice
    for i in range(2):
        assert "Traceback" not in (tmp_path / f"server{i}.log").read_text()
