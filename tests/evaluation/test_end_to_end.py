"""End-to-end `lego evaluate` with tiny random evaluator models and a stand-in generator (CPU, offline)."""

from __future__ import annotations

import json

import pytest
from eval_helpers import run_cli, write_config

from lego_inversion.backbones import resolve_model
from lego_inversion.evaluation import scoring


def test_concept_guidance_reaches_the_learned_methods_only(tmp_path, tiny, fake_generation):
    cfg = write_config(tmp_path, tiny)
    assert run_cli(["evaluate", str(cfg), "--out", str(tmp_path / "out"), "--no-progress", "--metrics", "clip",
                    "--concept-guidance", "6", "--concept-floor", "0.25"]) == 0
    gens = [c for c in fake_generation if "prompts" in c]
    for key, value in (("concept_guidance_scale", 6.0), ("concept_floor", 0.25)):
        learned = {c[key] for c in gens if c["concepts"]}
        plain = {c[key] for c in gens if not c["concepts"]}
        assert learned == {value} and plain == {None}


def test_a_bad_concept_floor_is_one_line(tmp_path, tiny, fake_generation, capsys):
    cfg = write_config(tmp_path, tiny)
    code = run_cli(["evaluate", str(cfg), "--out", str(tmp_path / "out"), "--no-progress", "--metrics", "clip",
                    "--concept-floor", "1.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "generation.concept_floor" in err[0]
    assert not [c for c in fake_generation if "prompts" in c]


def test_generate_score_report(tmp_path, tiny, fake_generation):
    cfg = write_config(tmp_path, tiny)
    out = tmp_path / "out"
    assert run_cli(["evaluate", str(cfg), "--out", str(out), "--no-progress"]) == 0

    # generation plan: 2 concepts; frozen: lego, ti, text; three: lego, text; 2 targets x 3 seeds each
    gens = [c for c in fake_generation if "prompts" in c]
    loads = [c for c in fake_generation if c.get("load")]
    assert sum(len(c["seeds"]) for c in gens) == (3 + 2) * 2 * 3
    assert {tuple(c["concepts"]) for c in loads} == {(str(tmp_path / "runs/frozen_lego"),),
                                                      (str(tmp_path / "runs/frozen_ti"),),
                                                      (str(tmp_path / "runs/three"),), ()}
    assert all(c["model"] == resolve_model(None) for c in loads)  # base_model "toy" -> the embedded toy model
    prompts = {p for c in gens for p in c["prompts"]}
    assert "a photo of a toy bear {frozen}" in prompts and "a photo of a toy bear frozen in ice" in prompts
    assert "a photo of three cats" in prompts and "a photo of {three} cats" in prompts
    for method in ("lego", "ti", "text"):
        files = sorted(p.name for p in (out / "images/frozen" / method).glob("*.png"))
        assert files == sorted(f"{t}_s{s}.png" for t in ("toy-bear", "cat") for s in (10, 11, 12))
        rows = [json.loads(x) for x in (out / "images/frozen" / method / "images.jsonl").read_text().splitlines()]
        assert sorted((r["subject"], r["seed"]) for r in rows) == sorted(
            (t, s) for t in ("toy bear", "cat") for s in (10, 11, 12))

    report = json.loads((out / "report.json").read_text())
    assert report["methods"] == ["lego", "ti", "text"]
    rows = {(r["concept"], r["method"]): r for r in report["rows"]}
    assert set(rows) == {("frozen", "lego"), ("frozen", "ti"), ("frozen", "text"), ("three", "lego"),
                         ("three", "text")}

    # VQA: the report's yes count equals an independent count from the stored likelihoods
    vqa_scores = scoring.load_scores(out, "vqa")
    assert len(vqa_scores) == 3 * 6  # frozen only: 3 methods x 6 images x 1 question
    for method in ("lego", "ti", "text"):
        yes = 0
        for key, v in vqa_scores.items():
            k = json.loads(key)
            if k[2].startswith(f"images/frozen/{method}/"):
                assert k[3] in ("Is the toy bear frozen in ice?", "Is the cat frozen in ice?")
                yes += v["yes"] > v["no"]
        s = rows[("frozen", method)]["metrics"]["vqa"]
        assert (s["k"], s["n"]) == (yes, 6)
        assert s["ci_low"] <= s["rate"] <= s["ci_high"]
    assert "vqa" not in rows[("three", "lego")]["metrics"]

    # counting only for the cardinality concept; the histogram sums to N
    c = rows[("three", "lego")]["metrics"]["count"]
    assert c["requested"] == 3 and c["n"] == 6 and sum(c["histogram"].values()) == 6
    assert c["k"] == c["histogram"].get("3", 0)
    assert "count" not in rows[("frozen", "lego")]["metrics"]

    # leakage: clip_leakage = clip_exemplar - clip_target image by image, so the means agree
    m = rows[("frozen", "ti")]["metrics"]
    assert m["clip_leakage"]["mean"] == pytest.approx(m["clip_exemplar"]["mean"] - m["clip_target"]["mean"],
                                                      abs=1e-5)
    assert -1 <= m["dino_exemplar"]["mean"] <= 1

    md = (out / "report.md").read_text()
    assert "| Concept | Metric | lego | ti | text |" in md
    assert f"| frozen | VQA yes | {rows[('frozen', 'lego')]['metrics']['vqa']['k']}/6 (" in md
    csv_lines = (out / "report.csv").read_text().splitlines()
    assert csv_lines[0] == "concept,method,target,metric,n,k,rate,mean,ci_low,ci_high"
    assert any(line.startswith("frozen,ti,,vqa,6,") for line in csv_lines)
    html = (out / "report.html").read_text()
    assert 'src="images/frozen/lego/toy-bear_s10.png"' in html and "plots/vqa.png" in html
    assert "http" not in html.replace("report.html", "")
    for metric in ("vqa", "count", "clip_concept", "dino_exemplar"):
        assert (out / "plots" / f"{metric}.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.rglob("part-*.jsonl"))  # merged into scores.jsonl


def test_resume_skips_done_work_and_survives_a_crash(tmp_path, tiny, fake_generation, monkeypatch):
    cfg = write_config(tmp_path, tiny, num_images=2, metrics=("vqa", "clip"))
    out = tmp_path / "out"
    real_score = scoring._Scorer.score
    calls = {"n": 0}

    def crashing(self, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return real_score(self, batch)

    monkeypatch.setattr(scoring._Scorer, "score", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_cli(["evaluate", str(cfg), "--out", str(out), "--no-progress"])
    saved = scoring._read_parts(out / "scores" / "vqa")
    assert len(saved) == 4  # the first batch (batch_size 4) was written before the crash
    n_images = len(list((out / "images").rglob("*.png")))
    assert n_images == (3 + 2) * 2 * 2

    # resume: nothing is generated again, only the units not on disk are scored
    monkeypatch.setattr(scoring._Scorer, "score", real_score)
    seen = []
    monkeypatch.setattr(scoring._Scorer, "score", lambda self, b: seen.extend(b) or real_score(self, b))
    fake_generation.clear()
    assert run_cli(["evaluate", str(cfg), "--out", str(out), "--no-progress"]) == 0
    assert not [c for c in fake_generation if "prompts" in c]
    assert len([u for u in seen if u.key.startswith('["vqa"')]) == 3 * 4 - 4
    resumed = (out / "report.json").read_text()

    # a third run does no work at all, and a fresh run gives the same report
    seen.clear()
    assert run_cli(["evaluate", str(cfg), "--out", str(out), "--no-progress"]) == 0
    assert seen == []
    fresh = tmp_path / "fresh"
    assert run_cli(["evaluate", str(cfg), "--out", str(fresh), "--no-progress"]) == 0
    assert (fresh / "report.json").read_text() == resumed

    # a deleted image is generated again (same seed) and nothing else is
    victim = out / "images/frozen/ti/cat_s11.png"
    victim.unlink()
    fake_generation.clear()
    assert run_cli(["evaluate", str(cfg), "--out", str(out), "--no-progress"]) == 0
    gens = [c for c in fake_generation if "prompts" in c]
    assert [(c["prompts"], c["seeds"]) for c in gens] == [(["a photo of a cat {frozen}"], [11])]
    assert (out / "report.json").read_text() == resumed
