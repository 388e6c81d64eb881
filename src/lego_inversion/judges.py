"""Judges of a concept's look in generated images, for choosing among learned rows (`--select-by look`).

    judge = load_judge(spec, model_id, config, device)   # the toy world's oracle, or BLIP-2 yes/no VQA
    judge(images, ["pyramid", "heart", ...])             # -> one score in [0, 1] per image

- On a toy-world model with a toy-world concept (concept.toml's `[toyworld]` table), the oracle's *clean hit*:
  the exemplar's personalized look (and, for a count, its number) on the prompt's subject, without the exemplar's
  appearance. This is the toy-world benchmark's `clean` metric (docs/toyworld_benchmark.md). With
  `select_look_credit` w > 0, an image with the look but no clean hit scores w.
- On any other model, §5.3's VQA judge: for each of the concept's `[evaluation] questions` ("Is the {target}
  melted?", {target} filled with the image's subject), p(yes) / (p(yes) + p(no)) from BLIP-2, averaged over the
  questions. The model is `select_vqa_model` (a local folder or a cached hub id, as `lego evaluate --vqa-model`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from .errors import UserError

Judge = Callable[[list, list[str]], list[float]]


def oracle_judge(truth: dict, look_credit: float = 0.0) -> Judge:
    """Clean hits of the toy-world oracle against the concept's ground truth (`evaluation.oracle.judge`): 1 for a
    clean hit, `look_credit` for the look (and number) shown without one (the exemplar's appearance, or another
    subject), else 0."""
    from .evaluation.oracle import judge, load_oracle

    oracle = load_oracle()

    def score(images, subjects: list[str]) -> list[float]:
        out = []
        for pred, subject in zip(oracle.predict(images), subjects, strict=True):
            j = judge(pred, truth, subject)
            look = j["variant"] and j["count"] is not False
            out.append(1.0 if look and j["fidelity"] and not j["leakage"] else look_credit if look else 0.0)
        return out

    return score


def vqa_judge(questions: list[str], model_id: str, device, dtype: str = "float32") -> Judge:
    """Mean p(yes) / (p(yes) + p(no)) of BLIP-2 over the question templates, {target} = the image's subject."""
    import math

    from .prompts import fill

    vqa = _blip(model_id, str(device), dtype)

    def score(images, subjects: list[str]) -> list[float]:
        total = [0.0] * len(images)
        for q in questions:
            asked = [fill(q, {"target": s}, where="evaluation.questions") for s in subjects]
            for i, (yes, no) in enumerate(vqa.score(images, asked)):
                total[i] += 1.0 / (1.0 + math.exp(no - yes))
        return [t / len(questions) for t in total]

    return score


@functools.cache
def _blip(model_id: str, device: str, dtype: str):
    """One BLIP-2 per (model, device, dtype) and process: runs of several seeds share it."""
    from .evaluation.models import BlipVqa

    return BlipVqa(model_id, device, dtype, field="select_vqa_model")


def oracle_truth(spec, model_id: str, where: str) -> dict | None:
    """The concept's toy-world ground truth when the oracle can judge it (a toy-world concept on a toy-world
    model), else None."""
    from .evaluation.oracle import is_toy_world_model, read_truth

    truth = read_truth({"toyworld": spec.toyworld}, where=where) if spec.toyworld else None
    return truth if truth is not None and is_toy_world_model(model_id) else None


def load_judge(spec, model_id: str, vqa_model: str, device, where: str, look_credit: float = 0.0) -> Judge:
    """The oracle for a toy-world concept on a toy-world model (`look_credit`: oracle_judge's), else the VQA judge
    on the concept's questions."""
    truth = oracle_truth(spec, model_id, where)
    if truth is not None:
        return oracle_judge(truth, look_credit)
    if look_credit:
        raise UserError(f"select_look_credit {look_credit:g} weighs the toy world's oracle, which cannot judge "
                        f"{where} on {model_id} (the VQA judge there reads the look alone): leave it 0")
    questions = [q for q in spec.evaluation.get("questions") or [] if isinstance(q, str)]
    if not questions:
        raise UserError(f"{where}: --select-by look needs yes/no questions to judge the look by; add "
                        "[evaluation] questions = [\"Is the {target} melted?\"] (or use --select-by exemplars)")
    return vqa_judge(questions, vqa_model, device)
