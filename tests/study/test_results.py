"""`lego study results`: majority vote, win rates, sign test, kappa and attention checks vs. hand computations;
output files; MTurk export -> results CSV -> same analysis; the CLI."""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter

import pytest
from PIL import Image

from lego_inversion.errors import UserError
from lego_inversion.study.cli import main as lego_main
from lego_inversion.study.mturk import export_batch, import_batch
from lego_inversion.study.results import AnalysisConfig, analyze, md_escape, to_markdown, write_outputs
from lego_inversion.study.stats import wilson_interval
from lego_inversion.study.storage import Answer, open_storage

# (votes for a, votes for b) per pair, in study order: melted pairs, then frozen pairs
MELTED = [(3, 0), (2, 1), (1, 2), (1, 1)]  # a, a, b, tie (one rater skipped it)
FROZEN = [(3, 0), (3, 0), (2, 1), (0, 0)]  # a, a, a, unanswered
RATERS = ["r001", "r002", "r003"]


def hand_answers(study, check_failures=None) -> list[Answer]:
    """r001 votes first, so with (va, vb) raters 0..va-1 choose a and the next vb choose b."""
    check_failures = check_failures or {"r001": 0, "r002": 1, "r003": 2}
    answers = []
    melted = [p for p in study.pairs if p.concept == "melted"]
    frozen = [p for p in study.pairs if p.concept == "frozen"]
    for pairs, votes in ((melted, MELTED), (frozen, FROZEN)):
        for pair, (va, vb) in zip(pairs, votes, strict=True):
            for i, slot in enumerate("a" * va + "b" * vb):
                answers.append(Answer(RATERS[i], pair.id, slot, "left"))
    for rater, fails in check_failures.items():
        for j, check in enumerate(study.checks):
            wrong = "b" if check.answer == "a" else "a"
            answers.append(Answer(rater, check.id, wrong if j < fails else check.answer, "right"))
    return answers


def _rows(report):
    comp = report["comparisons"][0]
    return {s["concept"]: s for s in comp["concepts"]} | {"ALL": comp["overall"]}


def test_aggregation_matches_hand_computation(small_study):
    report = analyze(small_study, hand_answers(small_study))
    rows = _rows(report)
    m, f, o = rows["melted"], rows["frozen"], rows["ALL"]
    assert (m["wins_a"], m["wins_b"], m["ties"], m["unanswered"]) == (2, 1, 1, 0)
    assert m["win_rate_a"] == pytest.approx(2 / 3)
    assert m["sign_test_p"] == pytest.approx(1.0)  # n = 3, k = 2: every outcome is at most as likely
    assert (m["votes_a"], m["votes_b"]) == (7, 4) and m["vote_share_a"] == pytest.approx(7 / 11)
    # P_i = 1, 1/3, 1/3, 0 -> P_bar = 5/12; p = (7/11, 4/11) -> P_e = 65/121; kappa = -175/672
    assert m["fleiss_kappa"] == pytest.approx(-175 / 672, abs=1e-12)
    assert (f["wins_a"], f["wins_b"], f["ties"], f["unanswered"]) == (3, 0, 0, 1)
    assert f["sign_test_p"] == pytest.approx(0.25)  # 2 * (1/2)^3
    assert f["fleiss_kappa"] == pytest.approx(-0.125, abs=1e-12)  # (7/9 - 65/81) / (16/81)
    assert (o["wins_a"], o["wins_b"], o["ties"], o["unanswered"], o["pairs"]) == (5, 1, 1, 1, 8)
    assert o["sign_test_p"] == pytest.approx(14 / 64)  # n = 6, k = 5: 2 * (6 + 1) / 64
    assert o["fleiss_kappa"] == pytest.approx(-1 / 7, abs=1e-12)  # (4/7 - 5/8) / (3/8)
    assert (o["ci_low"], o["ci_high"]) == pytest.approx(wilson_interval(5, 6))
    outcomes = [r["outcome"] for r in report["pairs"]]
    assert outcomes.count("tie") == 1 and outcomes.count("unanswered") == 1
    att = report["attention"]
    assert {r["rater"]: r["failed"] for r in att["raters"]} == {"r001": 0, "r002": 1, "r003": 2}
    assert att["failure_rate"] == pytest.approx(3 / 6) and att["dropped"] == []
    md = to_markdown(report)
    assert "| melted | 4 | 2 | 1 | 1 | 0 | 66.7% |" in md and "| **overall** | 8 | 5 | 1 | 1 | 1 | 83.3% |" in md


def test_dropping_raters_who_fail_attention_checks(small_study):
    answers = hand_answers(small_study)
    strict = analyze(small_study, answers, AnalysisConfig(drop_failing=True))
    assert strict["attention"]["dropped"] == ["r002", "r003"]
    assert strict["answers_used"] == len([a for a in answers if a.rater == "r001"])
    o = _rows(strict)["ALL"]  # r001 voted "a" on every answered pair
    assert (o["wins_a"], o["wins_b"], o["ties"], o["unanswered"]) == (7, 0, 0, 1)
    lenient = analyze(small_study, answers, AnalysisConfig(drop_failing=True, max_failure_rate=0.5))
    assert lenient["attention"]["dropped"] == ["r003"]  # 1/2 failed is not above 0.5; 2/2 is
    with pytest.raises(UserError, match="max-failure-rate"):
        AnalysisConfig(max_failure_rate=2)
    with pytest.raises(UserError, match="not in"):
        analyze(small_study, [Answer("r001", "p99999", "a", "left")])


def test_output_files(small_study, tmp_path):
    report = analyze(small_study, hand_answers(small_study))
    written = write_outputs(report, tmp_path / "res")
    assert sorted(p.name for p in written) == ["pairs.csv", "results.json", "results.md", "summary.csv",
                                               "win_rates.png"]
    data = json.loads((tmp_path / "res" / "results.json").read_text())
    assert data["comparisons"][0]["overall"]["wins_a"] == 5
    summary = list(csv.DictReader((tmp_path / "res" / "summary.csv").open()))
    assert [r["concept"] for r in summary] == ["frozen", "melted", "ALL"] and summary[1]["ties"] == "1"
    pairs = list(csv.DictReader((tmp_path / "res" / "pairs.csv").open()))
    assert len(pairs) == 8 and {r["outcome"] for r in pairs} == {"a", "b", "tie", "unanswered"}
    with Image.open(tmp_path / "res" / "win_rates.png") as img:
        assert img.format == "PNG" and img.size[0] > 100


def test_mturk_export_import_round_trip(small_study, tmp_path):
    n = export_batch(small_study, "https://example.org/study/images", tmp_path / "in.csv", tmp_path / "hit.html")
    rows = list(csv.DictReader((tmp_path / "in.csv").open()))
    assert n == len(rows) == 10 and "${left_url}" in (tmp_path / "hit.html").read_text()
    assert all(r["left_url"].startswith("https://example.org/study/images/") for r in rows)
    by_item = {r["item"]: r for r in rows}
    wanted = {(a.rater, a.item): a.slot for a in hand_answers(small_study)}
    out = []
    for (rater, item_id), slot in wanted.items():
        item = small_study.items[item_id]
        left_slot = "a" if by_item[item_id]["left_url"].endswith(item.a.image) else "b"
        side = "left" if slot == left_slot else "right"
        out.append({"WorkerId": f"W{rater}", "AssignmentStatus": "Approved", "Input.item": item_id,
                    "Input.left_url": by_item[item_id]["left_url"], "Answer.choice.left": str(side == "left"),
                    "Answer.choice.right": str(side == "right")})
    out.append(dict(out[0], AssignmentStatus="Rejected", WorkerId="Wspam"))  # rejected: skipped
    out.append(dict(out[1]))  # the same worker answering the same item twice: kept once
    with (tmp_path / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(out[0]))
        writer.writeheader()
        writer.writerows(out)
    answers, counts = import_batch(small_study, tmp_path / "results.csv")
    assert counts == {"rows": len(wanted) + 2, "rejected": 1, "duplicates": 1}
    assert {(a.rater.removeprefix("mturk:W"), a.item): a.slot for a in answers} == wanted
    assert _rows(analyze(small_study, answers)) == _rows(analyze(small_study, hand_answers(small_study)))
    (tmp_path / "bad.csv").write_text("WorkerId,Answer.choice\nA1,left\n")
    with pytest.raises(UserError, match="missing column"):
        import_batch(small_study, tmp_path / "bad.csv")
    with pytest.raises(UserError, match="base-url"):
        export_batch(small_study, "file:///etc", tmp_path / "x.csv")


def test_results_cli(small_study, tmp_path, capsys):
    root = small_study.root
    assert lego_main(["study", "results", str(root)]) == 2
    assert "no answers yet" in capsys.readouterr().err
    store = open_storage(str(root / "answers.sqlite"), small_study.id)
    for a in hand_answers(small_study):
        store.submit(a.rater, a.item, a.slot, a.side)
    store.close()
    assert lego_main(["study", "results", str(root), "--format", "json", "--out", str(tmp_path / "r")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["comparisons"][0]["overall"]["wins_a"] == 5 and (tmp_path / "r" / "win_rates.png").is_file()
    assert lego_main(["study", "results", str(root), "--drop-failing-raters"]) == 0
    assert "dropped raters: r002, r003" in capsys.readouterr().out
    assert lego_main(["study", "results", str(root), "--confidence", "7"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lego: error: --confidence") and err.count("\n") == 1


def test_three_methods_give_one_comparison_per_baseline(study_inputs, tmp_path):
    from lego_inversion.study.create import CreateConfig, create_study
    from lego_inversion.study.model import load_study

    from .conftest import make_image_set

    ti = make_image_set(tmp_path / "ti", "ti", ["melted"], ["cube"], [1, 2], salt=77)
    out = tmp_path / "three"
    create_study(CreateConfig(out=str(out), sets=study_inputs["sets"] + [str(ti)], concepts=study_inputs["concepts"],
                              raters_per_pair=1))
    study = load_study(out)
    assert study.methods == ["lego", "ldm", "ti"]
    assert Counter(p.comparison for p in study.pairs) == {"lego vs ldm": 8, "lego vs ti": 2}
    answers = [Answer("r001", p.id, "a" if p.b.method == "ti" else "b", "left") for p in study.pairs]
    report = analyze(study, answers)
    overall = {c["comparison"]: c["overall"] for c in report["comparisons"]}
    assert (overall["lego vs ti"]["wins_a"], overall["lego vs ti"]["wins_b"]) == (2, 0)
    assert (overall["lego vs ldm"]["wins_a"], overall["lego vs ldm"]["wins_b"]) == (0, 8)


def test_concept_without_decided_pairs_reports_na_not_p_1(small_study):
    """Only melted pairs answered: frozen has no decided pair, so its win rate and its p-value are both n/a."""
    answers = [a for a in hand_answers(small_study) if small_study.items[a.item].concept != "frozen"]
    report = analyze(small_study, answers)
    frozen = _rows(report)["frozen"]
    assert frozen["wins_a"] + frozen["wins_b"] == 0 and frozen["unanswered"] == 4
    assert math.isnan(frozen["win_rate_a"]) and math.isnan(frozen["sign_test_p"])
    assert "| frozen | 4 | 0 | 0 | 0 | 4 | n/a | [n/a, n/a] | n/a | n/a | n/a |" in to_markdown(report)
    assert _rows(report)["melted"]["sign_test_p"] == pytest.approx(1.0)  # n = 3, k = 2 still has a p-value


def test_report_says_kappa_is_the_generalised_fleiss_form(small_study):
    md = to_markdown(analyze(small_study, hand_answers(small_study)))
    assert "generalised to pairs answered by unequal numbers of raters" in md
    from lego_inversion.study import stats

    assert "unequal numbers of raters" in stats.fleiss_kappa.__doc__.replace("\n    ", " ")


HOSTILE = {"concept": "<script>alert(1)</script>|x$y^$", "subject": "@SUM(1+1)*cmd|' /C calc'!A0",
           "a": "=HYPERLINK(\"http://evil\")", "b": "-2+3", "name": "+study [x](javascript:y) *b*"}


def test_names_are_escaped_in_markdown_and_neutralised_in_csv(tmp_path):
    from lego_inversion.study.create import CreateConfig, create_study
    from lego_inversion.study.model import load_study

    from .conftest import make_concept, make_image_set

    h = HOSTILE
    sets = [make_image_set(tmp_path / f"set_{m}", h[m], [h["concept"]], [h["subject"]], [1, 2], salt=i)
            for i, m in enumerate("ab")]
    concept = make_concept(tmp_path / "run", "anything", 10)
    out = tmp_path / "study"
    create_study(CreateConfig(out=str(out), sets=[str(s) for s in sets], concepts=[f"{h['concept']}={concept}"],
                              raters_per_pair=1, name=h["name"]))
    study = load_study(out)
    answers = [Answer("r001", p.id, "a", "left") for p in study.pairs]
    written = write_outputs(analyze(study, answers), tmp_path / "res")  # the plot draws "$...$" names literally
    md = (tmp_path / "res" / "results.md").read_text()
    assert "<script>" not in md and "&lt;script&gt;alert(1)&lt;/script&gt;\\|x\\$y^\\$" in md
    assert "\\[x\\](javascript:y) \\*b\\*" in md  # no link, no emphasis
    assert md_escape("melted_cube") == "melted_cube" and md_escape("_x_") == "\\_x\\_"  # emphasis only escaped
    rows = [line for line in md.splitlines() if line.startswith("| &lt;script")]
    assert len(rows) == 1 and len(re.split(r"(?<!\\)\|", rows[0])) == 13  # 11 cells: the name's "|" is no column
    for name in ("summary.csv", "pairs.csv"):
        for row in csv.DictReader((tmp_path / "res" / name).open()):
            for cell in row.values():
                if cell.startswith(("=", "+", "-", "@")):
                    float(cell)  # only numbers may look like a formula (e.g. a negative kappa)
    pairs = list(csv.DictReader((tmp_path / "res" / "pairs.csv").open()))
    assert {(p["method_a"], p["method_b"], p["subject"], p["concept"]) for p in pairs} == {
        ("'" + h["a"], "'" + h["b"], "'" + h["subject"], h["concept"])}
    summary = list(csv.DictReader((tmp_path / "res" / "summary.csv").open()))
    assert summary[0]["comparison"] == "'" + h["a"] + " vs " + h["b"]
    assert (tmp_path / "res" / "win_rates.png") in written
