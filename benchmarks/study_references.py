"""Number of reference images (Lego supplementary §8), on the toy world, oracle-scored.

    PYTHONPATH=src python3 benchmarks/study_references.py --out runs/studies --concepts melted_cube \
        crumpled_pyramid --seeds 0 --steps 150 --images 4          # the reduced run of docs/studies.md
    PYTHONPATH=src python3 benchmarks/study_references.py --out runs/studies --concepts melted_cube \
        crumpled_pyramid three_stars sleeping_heart waving_ball frozen_bear --seeds 0 1 2  # full size

Lego (method `lego`, the trainer's defaults) learns each concept from N `with/` images (N in --with-counts,
without/ kept at 2) and from N `without/` images (N in --without-counts, with/ kept at 2). The examples have 2 of
each; the others are rendered deterministically by the toy world's renderer from the same scene (subject,
appearance, concept, variant, count) with other seeds (study_common.exemplar_seeds: the example's own seeds
first, then 500, 501, ...) into OUT/concepts/<concept>-w<N>-wo<M>/. The 2 + 2 condition is the example folder
itself (its run is shared with the words study's `hand` condition). Each (concept, condition, seed) cell is
scored like benchmarks/toyworld_ablation.py; results (95% bootstrap CIs over cells) go to
OUT/references/results.md|json and OUT/references/plot.png. Cells are saved as they finish; rerunning continues.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study_common import Study, UserError, common_args, derive_concept, main_wrapper, resolve_concepts

BASE = 2  # the examples' number of with/ and without/ images (the paper's setting, §5)


def conditions(with_counts: list[int], without_counts: list[int]) -> list[tuple[str, int, int]]:
    """(name, n_with, n_without): the with/ axis at without/ = 2, then the without/ axis at with/ = 2."""
    if any(n < 1 for n in with_counts + without_counts):
        raise UserError(f"image counts must be >= 1, not {with_counts + without_counts}")
    return [(f"with:{n}", n, BASE) for n in with_counts] + [(f"without:{n}", BASE, n) for n in without_counts]


def folder_for(study: Study, folder: Path, n_with: int, n_without: int) -> Path:
    """The concept folder with n_with / n_without exemplars (the example itself for 2 + 2)."""
    if n_with == BASE and n_without == BASE:
        return folder
    return derive_concept(folder, study.concepts / f"{folder.name}-w{n_with}-wo{n_without}", n_with, n_without)


def main(argv: list[str] | None = None) -> int:
    ap = common_args(__doc__.splitlines()[0])
    ap.add_argument("--with-counts", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--without-counts", nargs="+", type=int, default=[1, 2, 4, 8])
    args = ap.parse_args(argv)
    study = Study("references", args, argv)
    conds = conditions(args.with_counts, args.without_counts)
    folders = resolve_concepts(args.concepts)
    where = {(f.name, name): folder_for(study, f, nw, nwo) for f in folders for name, nw, nwo in conds}
    jobs = [(f"{f.name}-{name.replace(':', '')}-{s}", {"concept": f.name, "condition": name, "seed": s,
                                                        "n_with": nw, "n_without": nwo})
            for f in folders for name, nw, nwo in conds for s in args.seeds]
    todo = sorted({where[(j[1]["concept"], j[1]["condition"])] for j in jobs
                   if not (study.dir / "cells" / f"{j[0]}.json").is_file()})
    if todo:
        study.train(todo, ["lego"])
    from lego_inversion.sweep import run_name

    def compute(cell: dict) -> dict:
        folder = where[(cell["concept"], cell["condition"])]
        run = study.runs / run_name(folder, "lego", cell["seed"])
        return study.concept_cell(run, folder, cell["seed"]) | {"run": str(run)}

    cells = study.run_cells(jobs, compute)
    names = [c[0] for c in conds]
    table = study.report(cells, names, title="Number of reference images (Lego supp. §8), toy world, oracle-scored",
                         plot_x={c[0]: c[1] if c[0].startswith("with:") else c[2] for c in conds},
                         plot_xlabel="images in the varied set (the other set: 2)", baseline="with:2")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main_wrapper("references", main, sys.argv[1:]))
