"""What the toy-world studies (docs/studies.md) share: concept folders, training, generation, oracle scoring.

    from study_common import Study, common_args, derive_concept, example_of
    study = Study("words", args, argv)         # args from common_args(); writes OUT/words/
    runs = study.train(folders, ["lego"])      # sweep.invert_many, resumable: finished runs are skipped
    study.run_cells(jobs, lambda job: ...)     # one cells/<name>.json per finished cell (atomic): resumable
    table = study.report(cells, conditions, title="...")  # means with 95% bootstrap CIs + results.md/json + plot

Used by benchmarks/study_references.py (supplementary §8), study_words.py (§5.6) and study_subject.py (§9). The
oracle's reading of an image (`score`), the generation prompts (`with_prompts`), the targets of a cell
(`cell_targets`) and the bootstrap interval (`bootstrap_ci`) are benchmarks/toyworld_ablation.py's own, imported
by path, so a study's numbers mean exactly what the ablation's do. Trained runs live in <out>/runs/ and are shared
by the three studies (the hand-picked-words, 2 with/ + 2 without/ Lego run of a concept is one run).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# split name -> the folder of its concept folders (benchmarks/concept_splits.py builds the last two)
SPLIT_FOLDERS = {"examples": ROOT / "examples", "held-out": ROOT / "benchmarks" / "heldout",
                 "dev": ROOT / "benchmarks" / "dev"}
sys.path.insert(0, str(ROOT / "src"))

from lego_inversion.atomic import atomic_dir, atomic_save_image, atomic_write_json, atomic_write_text  # noqa: E402
from lego_inversion.errors import UserError  # noqa: E402


def load_script(name: str):
    """A benchmarks/<name>.py script imported as a module (they are scripts, not a package)."""
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ABLATION = load_script("toyworld_ablation")
METRICS = ABLATION.METRICS  # success, leakage, fidelity, clean
LABELS = {"success": "concept success", "leakage": "subject leakage", "fidelity": "target fidelity",
          "clean": "clean hit"}


def read_toml(path: Path) -> dict:
    from lego_inversion.documents import read_document

    return read_document(path, fix="rebuild the concept folder (lego toyworld make-examples)")


def example_of(folder: Path):
    """The toyworld `Example` a concept folder was rendered from (examples/, benchmarks/heldout/ or
    benchmarks/dev/), by name."""
    from lego_inversion.toyworld.examples import EXAMPLES

    known = {ex.name: ex for ex in EXAMPLES}
    if (ROOT / "benchmarks" / "concept_splits.py").is_file():
        known |= {ex.name: ex for split in load_script("concept_splits").SPLITS.values() for ex in split}
    if folder.name not in known:
        raise UserError(f"{folder}: not a toy-world example or a concept of benchmarks/heldout/ or benchmarks/dev/ "
                        f"(known: {', '.join(sorted(known))})")
    return known[folder.name]


def exemplar_seeds(base: tuple[int, ...], n: int) -> tuple[int, ...]:
    """n render seeds: the concept's own first (so 2 of them reproduce the original folder), then 500, 501, ..."""
    return tuple(base[:n]) + tuple(500 + i for i in range(max(0, n - len(base))))


def derive_concept(folder: Path, out: Path, n_with: int | None = None, n_without: int | None = None,
                   toml_text: str | None = None) -> Path:
    """Write a copy of a toy-world concept folder with n_with / n_without exemplars rendered by the toy world's
    renderer (same subject, appearance, concept and variant; seeds from `exemplar_seeds`) and/or another
    concept.toml. Deterministic; an existing folder with the same content is left alone (resume)."""
    from lego_inversion.toyworld.examples import concept_toml, scenes
    from lego_inversion.toyworld.render import render

    ex = example_of(folder)
    n_with = len(ex.seeds) if n_with is None else n_with
    n_without = len(ex.seeds) if n_without is None else n_without
    if n_with < 1 or n_without < 1:
        raise UserError(f"a concept needs at least one with/ and one without/ image, not {n_with}/{n_without}")
    with_ = scenes(dataclasses.replace(ex, seeds=exemplar_seeds(ex.seeds, n_with)))[0]
    without = scenes(dataclasses.replace(ex, seeds=exemplar_seeds(ex.seeds, n_without)))[1]
    toml_text = toml_text or concept_toml(ex)
    if (out / "concept.toml").is_file() and (out / "concept.toml").read_text() == toml_text \
            and len(list((out / "with").glob("*.png"))) == n_with \
            and len(list((out / "without").glob("*.png"))) == n_without:
        return out
    with atomic_dir(out) as tmp:
        for i, s in enumerate(with_):
            atomic_save_image(tmp / "with" / f"{i}.png", render(s))
        for i, s in enumerate(without):
            atomic_save_image(tmp / "without" / f"{i}.png", render(s))
        atomic_write_text(tmp / "concept.toml", toml_text)
    return out


def resolve_concepts(names: list[str]) -> list[Path]:
    """Concept names or folders -> toy-world concept folders (examples/<name>, benchmarks/heldout/<name> or
    benchmarks/dev/<name>)."""
    folders = []
    for name in names:
        candidates = [Path(name), *(folder / name for folder in SPLIT_FOLDERS.values())]
        found = next((c for c in candidates if (c / "concept.toml").is_file()), None)
        if found is None:
            raise UserError(f"--concepts {name}: no concept folder there, in examples/, benchmarks/heldout/ or "
                            "benchmarks/dev/")
        example_of(found)
        folders.append(found.resolve())
    return folders


def split_of(name: str) -> str:
    """"examples", "held-out" or "dev": the split a concept belongs to (examples/, benchmarks/heldout/ or
    benchmarks/dev/), by name."""
    return next((split for split, folder in SPLIT_FOLDERS.items() if (folder / name).is_dir()), "held-out")


def condition_rows(cells: list[dict], conditions: list[str], metrics, labels) -> tuple[dict, list[str]]:
    """Markdown rows: per condition, the mean over its cells of each metric with a 95% bootstrap interval."""
    summary, lines = {}, [f"| condition | {' | '.join(labels[m] for m in metrics)} | cells |",
                          "|---" * (len(metrics) + 2) + "|"]
    for cond in conditions:
        cs = [c for c in cells if c["condition"] == cond]
        if not cs:
            continue
        row = {m: ABLATION.bootstrap_ci([c[m] for c in cs]) for m in metrics}
        summary[cond] = row | {"cells": len(cs)}
        lines.append(f"| {cond} | " + " | ".join(f"{row[m][0]:.2f} [{row[m][1]:.2f}, {row[m][2]:.2f}]"
                                                 for m in metrics) + f" | {len(cs)} |")
    return summary, lines


def paired_rows(cells: list[dict], conditions: list[str], baseline: str, metrics, labels) -> tuple[dict, list[str]]:
    """Per condition: mean of (condition − baseline) over the (concept, seed) pairs both have, 95% bootstrap CI."""
    base = {(c["concept"], c["seed"]): c for c in cells if c["condition"] == baseline}
    summary, lines = {}, [f"| condition | {' | '.join(labels[m] for m in metrics)} | pairs |",
                          "|---" * (len(metrics) + 2) + "|"]
    for cond in conditions:
        pairs = [(c, base[(c["concept"], c["seed"])]) for c in cells
                 if c["condition"] == cond and (c["concept"], c["seed"]) in base]
        if cond == baseline or not pairs:
            continue
        row = {m: ABLATION.bootstrap_ci([a[m] - b[m] for a, b in pairs]) for m in metrics}
        summary[cond] = row | {"pairs": len(pairs)}
        lines.append(f"| {cond} | " + " | ".join(f"{row[m][0]:+.2f} [{row[m][1]:+.2f}, {row[m][2]:+.2f}]"
                                                 for m in metrics) + f" | {len(pairs)} |")
    return summary, lines


def common_args(description: str, default_out: str = "runs/studies") -> argparse.ArgumentParser:

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", default=default_out, help="study root; trained runs are shared under OUT/runs")
    ap.add_argument("--concepts", nargs="+", default=["melted_cube", "crumpled_pyramid"],
                    help="example / held-out concept names (or folders)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--steps", type=int, default=None, help="inversion steps per run (default: the model's)")
    ap.add_argument("--images", type=int, default=6, help="images per target subject")
    ap.add_argument("--targets", nargs="+", default=["ball", "star", "bear"])
    ap.add_argument("--sample-steps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the studies share a 2-core machine)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="InversionConfig settings for every run instead of the model's, e.g. timestep_min=0")
    return ap


class Study:
    """One study's output folder (OUT/<name>/), its shared run root (OUT/runs/) and oracle."""

    def __init__(self, name: str, args, argv: list[str] | None = None):
        import torch

        if (args.steps is not None and args.steps < 1) or args.images < 1 or args.sample_steps < 1 \
                or not args.seeds or not args.targets:
            raise UserError("--steps, --images and --sample-steps must be >= 1; --seeds and --targets not empty")
        from lego_inversion.config import InversionConfig, parse_overrides

        try:
            args.settings = parse_overrides(InversionConfig, list(getattr(args, "set", None) or []),
                                            exclude=("method", "seed", "steps"))
        except ValueError as exc:
            raise UserError(f"--set {exc}") from None
        torch.set_num_threads(args.threads)
        self.name, self.args = name, args
        self.argv = list(sys.argv[1:] if argv is None else argv)
        self.root = Path(args.out)
        self.dir = self.root / name
        self.runs = self.root / "runs"
        self.concepts = self.root / "concepts"
        self._oracle = None
        self._t0 = time.time()

    @property
    def oracle(self):
        if self._oracle is None:
            from lego_inversion.toyworld.oracle import Oracle

            self._oracle = Oracle.load()
        return self._oracle

    def config(self, **overrides):
        from lego_inversion.config import InversionConfig

        return InversionConfig(**({"steps": self.args.steps, "validation_images": 1, "validation_steps": 5}
                                  | self.args.settings | overrides))

    def train(self, folders: list[Path], methods: list[str], **overrides) -> list[Path]:
        """Train every folder × method × seed run jointly (one UNet call per step); finished runs are skipped."""
        from lego_inversion.sweep import invert_many

        return invert_many(folders, methods, self.args.seeds, self.runs, self.config(**overrides), resume=True,
                           progress=False)

    def targets(self, truth: dict) -> list[str]:
        return ABLATION.cell_targets(truth, SimpleNamespace(targets=self.args.targets, images=self.args.images))

    def generate_and_score(self, run: Path | None, prompts: list[str], truth: dict, targets: list[str],
                           seed: int, scorer=None) -> dict:
        """Generate one image per prompt (seeds 1000*seed + i, as the ablation) and read them with the oracle."""
        from lego_inversion.generation import load_generator

        gen = load_generator(None, [run] if run else [])
        seeds = [1000 * seed + i for i in range(len(prompts))]
        images = gen.generate(prompts, seeds, num_inference_steps=self.args.sample_steps, batch_size=16,
                              progress=False)
        preds = self.oracle.predict(images)
        scorer = scorer or ABLATION.score
        scores = [scorer(p, truth, t) for p, t in zip(preds, targets, strict=True)]
        keys = list(scores[0])
        return {"prompts": sorted(set(prompts)), **{k: float(np.mean([s[k] for s in scores])) for k in keys},
                "n_images": len(scores), "predictions": preds, "images": images}

    def concept_cell(self, run: Path, folder: Path, seed: int) -> dict:
        """The ablation's cell: the concept applied to each new target subject with the example's `with` prompt."""
        data = read_toml(folder / "concept.toml")
        truth = data["toyworld"]
        targets = self.targets(truth)
        from lego_inversion.formats import load_learned

        concept = " ".join(load_learned(run).tokens)
        prompts = ABLATION.with_prompts(data["prompts"]["with"], targets, concept,
                                        where=f"{folder / 'concept.toml'}: prompts.with")
        return self.generate_and_score(run, prompts, truth, targets, seed)

    def run_cells(self, jobs: list[tuple[str, dict]], compute) -> list[dict]:
        """jobs: (cell name, cell fields). A saved cells/<name>.json is reused; else compute(fields) -> metrics
        (its "images", if any, become grids/<name>.png) and the cell is saved atomically as it finishes."""
        from lego_inversion.toyworld.render import grid

        cells = []
        for i, (name, fields) in enumerate(jobs):
            path = self.dir / "cells" / f"{name}.json"
            if path.is_file():
                cells.append(json.loads(path.read_text()))
                continue
            result = compute(fields)
            images = result.pop("images", None)
            if images:
                atomic_save_image(self.dir / "grids" / f"{name}.png", grid(images[:12], cols=min(12, len(images))))
            cell = fields | result
            atomic_write_json(path, cell)
            cells.append(cell)
            shown = " ".join(f"{k}={v:.2f}" for k, v in result.items() if isinstance(v, float))
            print(f"[{self.name} {i + 1}/{len(jobs)} {time.time() - self._t0:.0f}s] {name}: {shown}", flush=True)
        return cells

    def report(self, cells: list[dict], conditions: list[str], metrics=METRICS, labels=LABELS, title: str = "",
               plot_x: dict | None = None, plot_xlabel: str = "", baseline: str | None = None) -> str:
        """Per condition: mean over cells with a 95% bootstrap CI (the ablation's), for all concepts and for each
        split (examples/, held-out, dev) on its own, then per-concept rows; writes results.md, results.json and
        plot.png (one panel per metric, all concepts) under OUT/<study>/. With `baseline`, also each condition's
        paired difference from it (same concept, seed and sampling seeds), mean with a 95% bootstrap interval."""
        groups = {"all concepts": cells}
        for split in SPLIT_FOLDERS:
            part = [c for c in cells if split_of(c["concept"]) == split]
            if part and len(part) < len(cells):
                groups[f"{split} only"] = part
        summary, lines = {}, []
        for group, part in groups.items():
            summary[group], rows = condition_rows(part, conditions, metrics, labels)
            lines += [f"**{group}** ({len({c['concept'] for c in part})} concepts):", "", *rows, ""]
        if baseline:
            summary["paired differences"], rows = paired_rows(cells, conditions, baseline, metrics, labels)
            lines += [f"Paired difference from `{baseline}` (condition minus {baseline}, cell by cell, all concepts):",
                      "", *rows, ""]
        lines += [f"Per concept ({' / '.join(labels[m] for m in metrics)}, mean over seeds):", "",
                  *ABLATION.per_concept_rows(cells, "condition", conditions, metrics,
                                             label=lambda k: f"{k} ({split_of(k)})", order=lambda k: (split_of(k), k))]
        table = "\n".join(lines) + "\n"
        cmd = f"PYTHONPATH=src python3 benchmarks/study_{self.name}.py " + " ".join(self.argv)
        atomic_write_json(self.dir / "results.json", {"summary": summary, "args": vars(self.args), "command": cmd,
                                                      "this_invocation_min": round((time.time() - self._t0) / 60, 1),
                                                      "cells": [{k: v for k, v in c.items() if k != "predictions"}
                                                                for c in cells]})
        atomic_write_text(self.dir / "results.md", f"{title}\n\nCommand: `{cmd}`\n\n{table}")
        if summary["all concepts"]:
            self.plot(summary["all concepts"], metrics, labels, title, plot_x, plot_xlabel)
        return table

    def plot(self, summary: dict, metrics, labels, title: str, xs: dict | None, xlabel: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        conds = list(summary)
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.0), squeeze=False)
        for ax, m in zip(axes[0], metrics):
            mean = np.array([summary[c][m][0] for c in conds])
            err = np.array([[mean[i] - summary[c][m][1], summary[c][m][2] - mean[i]] for i, c in enumerate(conds)]).T
            if xs is None:
                ax.bar(range(len(conds)), mean, yerr=err, capsize=3, color="tab:blue", alpha=0.8)
                ax.set_xticks(range(len(conds)), conds, rotation=30, ha="right", fontsize=8)
            else:  # condition names "<series>:<x>": one line per series
                for series in dict.fromkeys(c.split(":")[0] for c in conds):
                    idx = [i for i, c in enumerate(conds) if c.split(":")[0] == series]
                    ax.errorbar([xs[conds[i]] for i in idx], mean[idx], yerr=err[:, idx], marker="o", capsize=3,
                                label=series)
                ax.set_xscale("log", base=2)
                ticks = sorted({xs[c] for c in conds})
                ax.set_xticks(ticks, [str(x) for x in ticks])
                ax.set_xlabel(xlabel)
                ax.legend(fontsize=7)
            ax.set_ylim(-0.03, 1.03)
            ax.set_title(labels[m], fontsize=9)
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        path = self.dir / "plot.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        from lego_inversion.atomic import atomic_path

        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)


def main_wrapper(name: str, main, argv) -> int:
    """Run a study's main; bad input (UserError) -> one line on stderr, exit code 2."""
    try:
        return main(argv)
    except UserError as exc:
        print(f"study_{name}: error: {exc}", file=sys.stderr)
        return 2
