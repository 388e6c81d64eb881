"""The subject token alone (Lego supplementary §9): does `<subj>` reproduce the exemplar subject?

    PYTHONPATH=src python3 benchmarks/study_subject.py --out runs/studies --concepts melted_cube crumpled_pyramid \
        --seeds 0 --steps 150           # the reduced run of docs/studies.md (reuses the words study's runs)
    PYTHONPATH=src python3 benchmarks/study_subject.py --out runs/studies --concepts melted_cube crumpled_pyramid \
        three_stars sleeping_heart waving_ball frozen_bear --seeds 0 1 2       # full size (the model's steps)

For each concept and seed, the Lego run of its example folder (hand-picked words, 2 + 2 images; trained here
if OUT/runs/ does not hold it yet, the same run as the words study's `hand` cell) generates --subject-images
images of each prompt, with the same sampling seeds:
    subj     "a photo of a <subj>"            the learned Subject Separation token alone
    init     "a photo of a cube"              the plain init word of <subj> ([subject] init), no learned rows
    concept  "a photo of a <melted>"          the learned concept token(s) alone (should *not* be the subject)
and the oracle reads subject class and appearance:
    subject     = the exemplar's subject class      appearance = the exemplar's appearance (checkered, red, ...)
    exemplar    = both (the exemplar subject, as Textual Inversion's token would reproduce it)
    no concept  = the oracle sees no concept at all (the concept stayed out of <subj>)
Results (95% bootstrap CIs over cells) go to OUT/subject/results.md|json and OUT/subject/plot.png. Cells are
saved as they finish; rerunning continues.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study_common import Study, common_args, main_wrapper, read_toml, resolve_concepts

CONDITIONS = ("subj", "init", "concept")
METRICS = ("subject", "appearance", "exemplar", "no_concept")
LABELS = {"subject": "exemplar class", "appearance": "exemplar appearance", "exemplar": "exemplar (both)",
          "no_concept": "no concept"}


def read_subject(pred: dict, truth: dict, target=None) -> dict[str, float]:
    """Oracle reading of one image of the subject study -> its 0/1 metrics."""
    cls = pred["subject"] == truth["subject"]
    look = pred["appearance"] == truth["appearance"]
    return {"subject": float(cls), "appearance": float(look), "exemplar": float(cls and look),
            "no_concept": float(pred["concept"] == "none")}


def prompts_for(condition: str, init_word: str, n: int) -> list[str]:
    """n copies of the condition's prompt ({subject} / {concept} are filled by the generator)."""
    prompt = {"subj": "a photo of a {subject}", "init": f"a photo of a {init_word}",
              "concept": "a photo of a {concept}"}[condition]
    return [prompt] * n


def main(argv: list[str] | None = None) -> int:
    ap = common_args(__doc__.splitlines()[0])
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    ap.add_argument("--subject-images", type=int, default=12, help="images per prompt and cell")
    args = ap.parse_args(argv)
    study = Study("subject", args, argv)
    if args.subject_images < 1:
        from study_common import UserError

        raise UserError("--subject-images must be >= 1")
    folders = {f.name: f for f in resolve_concepts(args.concepts)}
    jobs = [(f"{name}-{c}-{s}", {"concept": name, "condition": c, "seed": s})
            for name in folders for c in args.conditions for s in args.seeds]
    todo = sorted({folders[j[1]["concept"]] for j in jobs if j[1]["condition"] != "init"
                   and not (study.dir / "cells" / f"{j[0]}.json").is_file()})
    if todo:
        study.train(todo, ["lego"])
    from lego_inversion.sweep import run_name

    def compute(cell: dict) -> dict:
        folder = folders[cell["concept"]]
        data = read_toml(folder / "concept.toml")
        run = study.runs / run_name(folder, "lego", cell["seed"])
        prompts = prompts_for(cell["condition"], data["subject"]["init"], args.subject_images)
        result = study.generate_and_score(None if cell["condition"] == "init" else run, prompts, data["toyworld"],
                                          [None] * len(prompts), cell["seed"], scorer=read_subject)
        return result | {"run": None if cell["condition"] == "init" else str(run)}

    cells = study.run_cells(jobs, compute)
    table = study.report(cells, list(args.conditions), metrics=METRICS, labels=LABELS,
                         title="The subject token alone (Lego supp. §9), toy world, oracle-scored", baseline="init")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main_wrapper("subject", main, sys.argv[1:]))
