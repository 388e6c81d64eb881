"""The web app through its HTTP API: rater flow, validation, path traversal, admin token."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from lego_inversion.study.app import create_app
from lego_inversion.study.create import CreateConfig, create_study
from lego_inversion.study.model import load_study
from lego_inversion.study.storage import open_storage


@pytest.fixture
def client(small_study, tmp_path):
    store = open_storage(str(tmp_path / "answers.sqlite"), small_study.id)
    with TestClient(create_app(small_study, store)) as c:
        c.study, c.store = small_study, store
        yield c
    store.close()


def _token(study, rater="r001"):
    return study.rater_tokens[rater]


def test_rater_page_shows_references_candidates_question_progress(client):
    study = client.study
    token = _token(study)
    page = client.get(f"/r/{token}")
    assert page.status_code == 200 and study.question in page.text
    first_id, swapped = study.order["r001"][0]
    item = study.items[first_id]
    left, right = (item.b, item.a) if swapped else (item.a, item.b)
    left_btn, right_btn = page.text.split('id="choose-left"')[1].split('id="choose-right"')
    assert f'src="/img/{left.image}"' in left_btn.split("</button>")[0]
    assert f'src="/img/{right.image}"' in right_btn.split("</button>")[0]
    for ref in study.references_for(item.concept):
        assert f"/img/{ref}" in page.text
    assert f"Question 1 of {len(study.order['r001'])}" in page.text
    assert "lego" not in page.text and "ldm" not in page.text  # the method is never revealed
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"


def test_answer_flow_is_idempotent_and_resumable(client):
    study, store = client.study, client.store
    token = _token(study)
    entries = study.order["r001"]
    item0, swapped0 = entries[0]
    r = client.post(f"/r/{token}/answer", data={"item": item0, "side": "left"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/r/{token}"
    client.post(f"/r/{token}/answer", data={"item": item0, "side": "right"})  # double click / changed mind
    answers = store.answers("r001")
    assert len(answers) == 1 and answers[0].side == "left"
    assert answers[0].slot == ("b" if swapped0 else "a")  # the slot shown on the left was recorded
    state = client.get(f"/api/r/{token}").json()
    assert state["answered"] == 1 and state["next"]["item"] == entries[1][0]
    # JSON API: answer the rest, one retry included
    for item, _ in entries[1:]:
        assert client.post(f"/api/r/{token}/answer", json={"item": item, "side": "right"}).json()["stored"] is True
    again = client.post(f"/api/r/{token}/answer", json={"item": entries[-1][0], "side": "right"}).json()
    assert again == {"stored": False, "choice": "right", "same": True, "answered": len(entries),
                     "total": len(entries)}
    done = client.get(f"/r/{token}")  # coming back later shows the thank-you page, not a question
    assert done.status_code == 200 and 'id="done"' in done.text and "choose-left" not in done.text
    assert client.get(f"/api/r/{token}").json()["next"] is None
    assert len(store.answers()) == len(entries)


@pytest.mark.parametrize("body,status", [
    ({"item": "p99999", "side": "left"}, 400),  # not in the study
    ({"item": "x' OR 1=1 --", "side": "left"}, 400),
    ({"item": None, "side": "left"}, 400),
    ({"side": "left"}, 400),
    ({"item": "ITEM", "side": "up"}, 400),
    ({"item": "ITEM", "side": ["left"]}, 400),
    ([1, 2], 400),
])
def test_api_rejects_bad_answers(client, body, status):
    study = client.study
    token = _token(study)
    mine = study.order["r001"][0][0]
    if isinstance(body, dict) and body.get("item") == "ITEM":
        body = dict(body, item=mine)
    r = client.post(f"/api/r/{token}/answer", json=body)
    assert r.status_code == status and "error" in r.json()
    assert client.store.count() == 0


def test_items_of_other_raters_are_rejected(study_inputs, tmp_path):
    out = tmp_path / "split"
    create_study(CreateConfig(out=str(out), sets=study_inputs["sets"], concepts=study_inputs["concepts"],
                              raters_per_pair=1, raters=4))
    study = load_study(out)
    store = open_storage(str(tmp_path / "split.sqlite"), study.id)
    with TestClient(create_app(study, store)) as c:
        assigned = {i for i, _ in study.order["r001"]}
        others = [p.id for p in study.pairs if p.id not in assigned]
        assert len(assigned) == 2 and len(others) == 6
        for item in others:
            r = c.post(f"/api/r/{_token(study)}/answer", json={"item": item, "side": "left"})
            assert r.status_code == 400 and "not part of your study" in r.json()["error"]
        assert store.count() == 0
    store.close()


def test_malformed_forms_are_rejected(client):
    token = _token(client.study)
    assert client.post(f"/r/{token}/answer", data={"item": "p00001"}).status_code == 400  # no side
    assert client.post(f"/r/{token}/answer", content=b"\xff\xfe", headers={"content-type": "text/plain"}
                       ).status_code == 400
    assert client.post(f"/api/r/{token}/answer", content=b"{not json", headers={"content-type": "application/json"}
                       ).status_code == 400
    big = client.post(f"/r/{token}/answer", data={"item": "p00001", "side": "left", "pad": "x" * 100_000})
    assert big.status_code == 413
    assert client.store.count() == 0


@pytest.mark.parametrize("token", ["nope", "A" * 24, "../../secrets.json", "x" * 200])
def test_unknown_tokens_get_404(client, token):
    assert client.get(f"/r/{token}").status_code == 404
    assert client.post(f"/api/r/{token}/answer", json={"item": "p00001", "side": "left"}).status_code in (404, 405)
    assert client.store.count() == 0


def test_images_only_from_the_study_folder(client):
    study = client.study
    name = study.pairs[0].a.image
    ok = client.get(f"/img/{name}")
    assert ok.status_code == 200 and ok.content == (study.images_dir / name).read_bytes()
    (study.root / "images" / "notes.txt").write_text("private")
    for path in ["/img/..%2Fsecrets.json", "/img/%2e%2e%2fsecrets.json", "/img/../secrets.json",
                 "/img/..%2F..%2Fetc%2Fpasswd", "/img/%2Fetc%2Fpasswd", "/img/notes.txt", "/img/secrets.json",
                 "/img/" + "0" * 20 + ".png", "/img/..%5Csecrets.json", "/img/" + name + "%00.txt"]:
        r = client.get(path)
        assert r.status_code == 404, path
        assert study.admin_token not in r.text and "private" not in r.text


def test_admin_needs_the_admin_token(client):
    study = client.study
    assert client.get("/admin").status_code == 401
    assert client.get("/admin", params={"token": _token(study)}).status_code == 401  # a rater token is not enough
    assert client.get("/api/admin/progress", headers={"Authorization": "Bearer wrong"}).status_code == 401
    token = _token(study)
    client.post(f"/api/r/{token}/answer", json={"item": study.order["r001"][0][0], "side": "left"})
    page = client.get("/admin", params={"token": study.admin_token})
    assert page.status_code == 200 and "melted" in page.text and "frozen" in page.text
    prog = client.get("/api/admin/progress", headers={"Authorization": f"Bearer {study.admin_token}"}).json()
    assert prog["answers"] == 1 and prog["needed"] == sum(len(v) for v in study.order.values())
    by_concept = {c["concept"]: c for c in prog["concepts"]}
    assert by_concept["melted"]["needed"] == 4 * 3 and by_concept["melted"]["pairs"] == 4
    first = study.items[study.order["r001"][0][0]]
    if first.kind == "pair":
        assert by_concept[first.concept]["received"] == 1
    assert {r["rater"]: r["answered"] for r in prog["raters"]} == {"r001": 1, "r002": 0, "r003": 0}


def test_index_and_no_docs(client):
    assert "personal link" in client.get("/").text
    assert client.get("/docs").status_code == 404 and client.get("/openapi.json").status_code == 404


def test_healthz_shows_liveness_only(client):
    """Without a token nothing about the study's progress is visible: not the number of answers."""
    study = client.study
    for item, _ in study.order["r001"][:3]:
        client.post(f"/api/r/{_token(study)}/answer", json={"item": item, "side": "left"})
    assert client.store.count() == 3
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"ok": True} and not re.search(r"\d", r.text)


def test_serve_binds_loopback_by_default_and_rejects_bad_input(tmp_path, capsys):
    import argparse

    from lego_inversion.study.cli import main as lego_main
    from lego_inversion.study.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    assert parser.parse_args(["study", "serve", "s"]).host == "127.0.0.1"
    assert lego_main(["study", "serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lego: error: ") and "no such study folder" in err and err.count("\n") == 1


def test_links_command(small_study, capsys):
    from lego_inversion.study.cli import main as lego_main

    assert lego_main(["study", "links", str(small_study.root), "--base-url", "http://127.0.0.1:9/"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"r001\thttp://127.0.0.1:9/r/{small_study.rater_tokens['r001']}"
    assert lines[-1] == f"admin\thttp://127.0.0.1:9/admin?token={small_study.admin_token}" and len(lines) == 4
