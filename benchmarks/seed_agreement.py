"""Do the seeds of one concept move its learned rows the same way? And their average as a token
(docs/inversion_quality.md (m)).

    PYTHONPATH=src python3 benchmarks/seed_agreement.py runs/abl_hue6_ex runs/seeds9_ex --json runs/agree_ex.json
    PYTHONPATH=src python3 benchmarks/seed_agreement.py runs/abl_hue6_ex runs/seeds9_ex \
        --average-into runs/avg_ex --groups 0,3,6 1,4,7 2,5,8
    PYTHONPATH=src python3 benchmarks/toyworld_ablation.py --out runs/avg_ex --methods lego --seeds 0 1 2 --no-cost

Reads the run folders `<folder>/runs/<concept>-<method>-s<seed>` of ablation outputs. For every concept row: each
seed's displacement from its initializer word (the token's name, as in token_neighbours.py), its norm, and the
cosine between the displacements of every two seeds: about 0 ± 0.05 for independent walks in the 384 dimensions
of the toy encoder, 1 for one shared direction. Where the folders hold the ablation's cells (cells/*.json), also the
Spearman correlation, over a concept's seeds, between each seed's concept success and three properties of its first
concept row: the displacement's norm, its cosine with the other seeds' mean displacement, and the row's cosine with
the initializer (does anything in the rows tell which seed transfers?).

--average-into OUT: for each group of seeds, a copy of the group's first seed's run folder whose concept rows are
the mean of the group's rows (`<subj>` stays the seed's own; generation does not use it). The ablation then
generates from the finished copies without training, with that seed's sampling noise, so each averaged cell pairs
with the first seed's own cell.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shutil
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

EMBEDS = "learned_embeds.safetensors"


def find_runs(folders: list[Path], method: str) -> dict[str, dict[int, Path]]:
    """concept -> seed -> finished run folder."""
    runs: dict[str, dict[int, Path]] = {}
    for folder in folders:
        for run in sorted((folder / "runs").glob(f"*-{method}-s*")):
            m = re.fullmatch(rf"(.+)-{re.escape(method)}-s(\d+)", run.name)
            if m and (run / EMBEDS).is_file():
                runs.setdefault(m[1], {})[int(m[2])] = run
    return runs


def concept_rows(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tokens = json.loads((run / "concept.json").read_text())["tokens"]
    learned = load_file(str(run / EMBEDS))
    return {t: learned[t].float().reshape(-1) for t in tokens}


def initializer_row(token: str, tokenizer, table: torch.Tensor) -> torch.Tensor:
    """The row of the token's initializer word: its name without brackets or a multi-vector suffix, as in
    token_neighbours.py (every toy-world concept token is named after its init word)."""
    from lego_inversion.backbones.tokens import words_to_rows

    return words_to_rows([re.sub(r"_\d+>$", ">", token).strip("<>")], tokenizer, table)[0].float()


def agreement(runs: dict[int, Path], table: torch.Tensor, tokenizer) -> dict:
    """Per concept token: displacement norms per seed and the cosine of every pair of displacements."""
    rows = {s: concept_rows(r) for s, r in sorted(runs.items())}
    out = {}
    for token in next(iter(rows.values())):
        init = initializer_row(token, tokenizer, table)
        disp = {s: r[token] - init for s, r in rows.items()}
        cos = [float(F.cosine_similarity(disp[a], disp[b], dim=0)) for a, b in itertools.combinations(disp, 2)]
        out[token] = {"init_norm": round(float(init.norm()), 3),
                      "displacement_norms": {s: round(float(d.norm()), 3) for s, d in disp.items()},
                      "pair_cosines": [round(c, 3) for c in cos],
                      "mean_pair_cosine": round(sum(cos) / len(cos), 3) if cos else None}
    return out


def spearman(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties); nan when either side is constant."""
    import numpy as np

    def ranks(x):
        x = np.asarray(x, dtype=np.float64)
        order = x.argsort(kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):  # ties share their mean rank
            r[x == v] = r[x == v].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def success_vs_geometry(runs: dict[int, Path], success: dict[int, float], table, tokenizer) -> dict:
    """Spearman ρ over seeds between success and (displacement norm, cosine with the other seeds' mean
    displacement, cosine with the initializer) of the first concept row."""
    seeds = [s for s in sorted(runs) if s in success]
    rows = {s: concept_rows(runs[s]) for s in seeds}
    token = next(iter(rows[seeds[0]]))
    init = initializer_row(token, tokenizer, table)
    disp = {s: rows[s][token] - init for s in seeds}
    norm = [float(disp[s].norm()) for s in seeds]
    loo = [float(F.cosine_similarity(disp[s], torch.stack([disp[o] for o in seeds if o != s]).mean(0), dim=0))
           for s in seeds]
    cos_init = [float(F.cosine_similarity(rows[s][token], init, dim=0)) for s in seeds]
    y = [success[s] for s in seeds]
    return {"seeds": len(seeds), "rho_norm": spearman(y, norm), "rho_agreement": spearman(y, loo),
            "rho_cos_init": spearman(y, cos_init)}


def average_into(out: Path, runs: dict[int, Path], group: list[int]) -> Path:
    """A finished copy of run `group[0]` whose concept rows are the group's mean."""
    from lego_inversion.averaging import mean_vectors
    from lego_inversion.formats import load_learned

    first = runs[group[0]]
    mean = mean_vectors([load_learned(runs[s]) for s in group], list(concept_rows(first)))
    return rows_into(out, first, {t: vectors[0] for t, vectors in mean.items()})


def rows_into(out: Path, run: Path, rows: dict[str, torch.Tensor]) -> Path:
    """A finished copy of `run` in `out/runs/` whose learned rows named in `rows` are replaced (the others, e.g.
    `<subj>`, stay the run's own); the ablation generates from it without training."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from lego_inversion.atomic import atomic_dir

    target = out / "runs" / run.name
    with safe_open(run / EMBEDS, "pt") as f:
        meta = f.metadata()
        own = {k: f.get_tensor(k) for k in f.keys()}
    with atomic_dir(target, replace=target.exists()) as tmp:
        shutil.copytree(run, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("tensorboard", "validation"))
        save_file(own | {t: v.reshape(own[t].shape).to(own[t].dtype) for t, v in rows.items()}, tmp / EMBEDS,
                  metadata=meta)
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="ablation output folders (with runs/)")
    ap.add_argument("--method", default="lego")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--average-into", type=Path, default=None)
    ap.add_argument("--groups", nargs="*", default=[], help="seed groups to average, e.g. 0,3,6 1,4,7")
    args = ap.parse_args(argv)
    runs = find_runs(args.folders, args.method)
    if not runs:
        print(f"seed_agreement: error: no finished {args.method} runs under "
              f"{', '.join(str(f / 'runs') for f in args.folders)}", file=sys.stderr)
        return 2
    try:
        groups = [[int(s) for s in g.split(",")] for g in args.groups]
    except ValueError:
        print(f"seed_agreement: error: --groups {' '.join(args.groups)}: comma-separated seeds, e.g. 0,3,6",
              file=sys.stderr)
        return 2
    if args.average_into:
        missing = [f"{c} s{s}" for c, by in runs.items() for g in groups for s in g if s not in by]
        if not groups or missing:
            print(f"seed_agreement: error: --average-into needs --groups of seeds every concept has "
                  f"(missing: {', '.join(missing[:5]) or 'no groups'})", file=sys.stderr)
            return 2
        for by in runs.values():
            for g in groups:
                average_into(args.average_into, by, g)
        print(f"{len(runs) * len(groups)} averaged runs in {args.average_into / 'runs'}")
        return 0
    from lego_inversion.backbones import load_backbone

    slot = load_backbone(None).slots[0]
    report = {c: agreement(by, slot.base_table, slot.tokenizer) for c, by in sorted(runs.items())}
    cosines = []
    for concept, tokens in report.items():
        for token, t in tokens.items():
            cosines += t["pair_cosines"]
            print(f"{concept} {token}: |init| {t['init_norm']}, |displacement| "
                  f"{sorted(t['displacement_norms'].values())[len(t['displacement_norms']) // 2]:.2f} (median of "
                  f"{len(t['displacement_norms'])} seeds), pair cosine {t['mean_pair_cosine']}")
    if cosines:
        print(f"mean pair cosine over {len(cosines)} pairs: {sum(cosines) / len(cosines):.3f}")
    from toyworld_ablation import load_cells

    success = {}
    for (concept, seed), c in load_cells(args.folders, args.method).items():
        success.setdefault(concept, {})[seed] = c["success"]
    rhos = {c: success_vs_geometry(by, success[c], slot.base_table, slot.tokenizer)
            for c, by in sorted(runs.items()) if len(set(success.get(c, {})) & set(by)) >= 3}
    for concept, r in rhos.items():
        print(f"{concept}: Spearman rho of success over {r['seeds']} seeds with norm {r['rho_norm']:+.2f}, "
              f"agreement {r['rho_agreement']:+.2f}, cos(init) {r['rho_cos_init']:+.2f}")
        report[concept]["success_vs_geometry"] = r
    if rhos:
        import numpy as np

        print("mean rho (norm, agreement, cos init): " + ", ".join(
            f"{np.nanmean([r[k] for r in rhos.values()]):+.2f}" for k in ("rho_norm", "rho_agreement", "rho_cos_init")))
    if args.json:
        from lego_inversion.atomic import atomic_write_json

        atomic_write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
