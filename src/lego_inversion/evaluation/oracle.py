"""The `oracle` metric: images of the toy-world model judged by the toy world's own classifier (Table 2 offline).

    from lego_inversion.evaluation.oracle import is_toy_world_model, read_truth, judge
    is_toy_world_model(resolve_model(None))                  # True: the embedded toy-world model
    truth = read_truth(concept_json, where="runs/three/concept.json")   # its `toyworld` table, checked
    judge({"subject": "ball", "appearance": "red", "concept": "count", "variant": 1, "count": 3}, truth, "balls")
    # -> {"concept": True, "variant": True, "count": True, "leakage": False, "fidelity": True}

The ground truth of a concept is the `[toyworld]` table of its concept TOML (copied into concept.json by
`lego invert`): the exemplar's subject, appearance, concept, personalized variant and count. The oracle
(`toyworld.oracle.Oracle`) reads each generated image into the same five fields, and each image is judged:
- concept: the oracle sees the concept (any variant);
- variant: it sees the concept's personalized variant (what inversion must find: no caption names it);
- count: it counts exactly the concept's number of subjects (cardinality concepts only);
- leakage: the image shows the exemplar's appearance (e.g. the checkered texture), whatever the subject;
- fidelity: the subject is the target subject (the target text must name a toy-world subject: "ball", "balls").
Each is reported as k/N with a 95% Wilson interval. A toy-world model is the embedded default or any pipeline
folder with the toy model's markers (an `LDMTextToImagePipeline` folder with the `training.json` record that
`lego toyworld train` writes beside the weights).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path

from ..errors import UserError

TRUTH_FIELDS = ("subject", "appearance", "concept", "variant", "count")
JUDGEMENTS = ("concept", "variant", "count", "leakage", "fidelity")  # report metric = "oracle_" + judgement
_MARKERS = ("model_index.json", "training.json")
_PIPELINE = "LDMTextToImagePipeline"


def is_toy_world_model(model_id: str | None) -> bool:
    """Whether `model_id` (a resolved model id or folder) is the toy-world model or a folder shaped like it."""
    folder = Path(str(model_id or ""))
    if not all((folder / m).is_file() for m in _MARKERS):
        return False
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(index, dict) and index.get("_class_name") == _PIPELINE


def _world():
    from ..toyworld import render

    return render


def read_truth(meta: dict, where: str) -> dict | None:
    """The concept's toy-world ground truth from concept.json's `toyworld` table; None when there is none."""
    table = meta.get("toyworld") or None
    if table is None:
        return None
    world = _world()
    if not isinstance(table, dict):
        raise UserError(f"{where}: `toyworld` must be a table of {', '.join(TRUTH_FIELDS)}")
    choices = {"subject": world.SUBJECTS, "appearance": world.APPEARANCES, "concept": tuple(world.CONCEPTS)}
    truth = {}
    for key in TRUTH_FIELDS:
        value = table.get(key)
        if key in choices and value not in choices[key]:
            raise UserError(f"{where}: toyworld.{key} = {value!r}; use one of {', '.join(choices[key])}")
        if key in ("variant", "count") and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise UserError(f"{where}: toyworld.{key} = {value!r}; use a non-negative integer")
        truth[key] = value
    return truth


def target_subject(target: str) -> str | None:
    """The toy-world subject a target text names ("ball", "red ball", "balls" -> "ball"); None if not exactly one."""
    world = _world()
    singular = {p: s for s, p in world.PLURALS.items()} | {s: s for s in world.SUBJECTS}
    found = {singular[w] for w in re.findall(r"[a-z]+", target.lower()) if w in singular}
    return found.pop() if len(found) == 1 else None


def require_subject(target: str, where: str) -> str:
    """`target_subject`, or a UserError naming the subjects the oracle knows."""
    subject = target_subject(target)
    if subject is None:
        raise UserError(f"{where}: target {target!r} names no toy-world subject; the oracle knows "
                        f"{', '.join(_world().SUBJECTS)} (or their plurals)")
    return subject


def judge(prediction: dict, truth: dict, target: str) -> dict[str, bool | None]:
    """One image's judgements (see the module docstring); `count` is None for concepts that are not counts."""
    concept = prediction["concept"] == truth["concept"]
    return {"concept": concept,
            "variant": concept and prediction["variant"] == truth["variant"],
            "count": prediction["count"] == truth["count"] if truth["concept"] == "count" else None,
            "leakage": prediction["appearance"] == truth["appearance"],
            "fidelity": prediction["subject"] == target_subject(target)}


@functools.cache
def load_oracle():
    """The bundled toy-world oracle (once per process)."""
    from ..toyworld.oracle import Oracle

    return Oracle.load()


@functools.cache
def oracle_id() -> str:
    """Names the oracle's weights in score keys: a retrained oracle scores every image again."""
    h = hashlib.sha1()
    for name, tensor in sorted(load_oracle().net.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"toyworld-oracle#{h.hexdigest()[:16]}"
