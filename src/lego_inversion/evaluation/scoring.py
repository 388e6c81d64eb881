"""Resumable, sharded scoring of image records with the evaluator models (§5.3 of Lego and beyond).

    units = metric_units("vqa", records, concepts, cfg, out_dir)
    run_metric("vqa", units, cfg, concepts, out_dir, state, device)   # writes OUT/scores/vqa/*.jsonl

Each unit of work (an image and, for VQA, one question) has a key; finished keys are never scored again.
Pending units are cut into batches in a fixed order, and whole batches are shared out with accelerate's
`split_between_processes`, so each image sees the same batch whatever the number of processes (the merged
report equals a single-process run). Every process rewrites its own `part-*.jsonl` atomically after each
batch, so a crash loses at most the batch in flight; the main process then merges parts into `scores.jsonl`.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..atomic import atomic_write_text
from ..manifest import ImageRecord
from .config import EvalConfig
from .plan import ResolvedConcept


@dataclass(frozen=True)
class Unit:
    key: str
    record: ImageRecord
    text: str = ""  # the VQA question or the detector query
    concept: str = ""


def rel(path: Path, out_dir: Path) -> str:
    """Image path as stored in score keys: relative to OUT when inside it, else absolute."""
    path = Path(path).resolve()
    try:
        return path.relative_to(Path(out_dir).resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def file_digest(path: Path) -> str:
    """Content hash of an image file: a replaced image is scored again, an unchanged one never."""
    st = os.stat(path)
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _DIGESTS:
        _DIGESTS[key] = hashlib.sha1(Path(path).read_bytes()).hexdigest()[:16]
    return _DIGESTS[key]


_DIGESTS: dict[tuple, str] = {}


def exemplar_digest(paths: list[Path]) -> str:
    h = hashlib.sha1()
    for p in sorted(str(x) for x in paths):
        h.update(hashlib.sha1(Path(p).read_bytes()).digest())
    return h.hexdigest()[:16]


def concept_text(rc: ResolvedConcept, target: str) -> str:
    """The text CLIP aligns each image with: the concept's description applied to the target subject."""
    return rc.text_prompt(target)


def target_text(target: str) -> str:
    return f"a photo of a {target}"


def _model_id(metric: str, cfg: EvalConfig) -> str:
    """The evaluator model a metric's score keys name."""
    if metric == "oracle":
        from .oracle import oracle_id

        return oracle_id()
    return getattr(cfg.models, {"count": "detector"}.get(metric, metric))


def metric_units(metric: str, records: list[ImageRecord], concepts: list[ResolvedConcept], cfg: EvalConfig,
                 out_dir: Path) -> list[Unit]:
    """All units of one metric, in a fixed order (concept, method, target, seed, question)."""
    by_name = {rc.name: rc for rc in concepts}
    model = _model_id(metric, cfg)
    digests = {rc.name: exemplar_digest(rc.exemplars) for rc in concepts if rc.exemplars}
    units = []
    for r in records:
        rc = by_name[r.concept]
        parts: list = []
        image = f"{rel(r.path, out_dir)}#{file_digest(r.path)}"
        if metric == "vqa":
            for q in rc.questions_for(r.subject):
                units.append(Unit(json.dumps(["vqa", model, image, q]), r, q, rc.name))
            continue
        if metric == "count":
            if rc.count is None:
                continue
            parts = [r.subject, min(0.01, cfg.models.detector_threshold)]
        elif metric == "clip":
            parts = [concept_text(rc, r.subject), target_text(r.subject), digests.get(rc.name)]
        elif metric == "dino":
            if rc.name not in digests:
                continue
            parts = [digests[rc.name]]
        elif metric == "oracle" and not rc.oracle_ready:
            continue
        units.append(Unit(json.dumps([metric, model, image, *parts]), r, r.subject, rc.name))
    return units


def _read_parts(folder: Path) -> dict[str, dict]:
    values: dict[str, dict] = {}
    if not folder.is_dir():
        return values
    files = sorted(folder.glob("part-*.jsonl"))
    if (folder / "scores.jsonl").is_file():
        files.insert(0, folder / "scores.jsonl")
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # cannot happen with atomic writes; tolerate hand edits
            if isinstance(row, dict) and "key" in row:
                values[row["key"]] = row["value"]
    return values


def load_scores(out_dir: Path, metric: str) -> dict[str, dict]:
    return _read_parts(Path(out_dir) / "scores" / metric)


class _Scorer:
    """Loads one evaluator model lazily and scores batches of units of its metric."""

    def __init__(self, metric: str, cfg: EvalConfig, concepts: list[ResolvedConcept], device: str):
        self.metric, self.cfg, self.device = metric, cfg, device
        self.concepts = {rc.name: rc for rc in concepts}
        self.model = None
        self.exemplar_emb: dict[str, object] = {}

    def _load(self):
        from . import models as M

        m = self.cfg.models
        if self.metric == "vqa":
            return M.BlipVqa(m.vqa, self.device, m.dtype)
        if self.metric == "count":
            return M.Detector(m.detector, self.device, m.dtype, min_score=min(0.01, m.detector_threshold))
        if self.metric == "clip":
            return M.CLIPEmbedder(m.clip, self.device, m.dtype)
        if self.metric == "oracle":
            from .oracle import load_oracle

            return load_oracle()
        return M.DinoEmbedder(m.dino, self.device, m.dtype)

    def _exemplars(self, name: str):
        from PIL import Image

        if name not in self.exemplar_emb:
            paths = self.concepts[name].exemplars
            if not paths:
                self.exemplar_emb[name] = None
            else:
                ims = [Image.open(p).convert("RGB") for p in paths]
                self.exemplar_emb[name] = self.model.images(ims)
        return self.exemplar_emb[name]

    def score(self, batch: list[Unit]) -> list[dict]:
        from PIL import Image

        if self.model is None:
            self.model = self._load()
        images = []
        for u in batch:
            with Image.open(u.record.path) as im:
                images.append(im.convert("RGB"))
        if self.metric == "vqa":
            return [{"yes": y, "no": n} for y, n in self.model.score(images, [u.text for u in batch])]
        if self.metric == "count":
            return [{"scores": s, "boxes": b} for s, b in self.model.detect(images, [u.text for u in batch])]
        if self.metric == "oracle":  # its reading of each image; judged against the ground truth in the report
            return self.model.predict(images)
        emb = self.model.images(images)
        out = []
        if self.metric == "clip":
            texts = []
            for u in batch:
                rc = self.concepts[u.concept]
                texts += [concept_text(rc, u.record.subject), target_text(u.record.subject)]
            temb = self.model.texts(texts)
        for i, u in enumerate(batch):
            ex = self._exemplars(u.concept)
            value = {"exemplar": None if ex is None else round(float((ex @ emb[i]).mean()), 6)}
            if self.metric == "clip":
                value["concept"] = round(float(temb[2 * i] @ emb[i]), 6)
                value["target"] = round(float(temb[2 * i + 1] @ emb[i]), 6)
            out.append(value)
        return out


def _free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_metric(metric: str, units: list[Unit], cfg: EvalConfig, concepts: list[ResolvedConcept], out_dir: Path,
               state, device: str, progress: bool = True) -> None:
    """Score every unit not already on disk; all processes must call this (it synchronises them)."""
    folder = Path(out_dir) / "scores" / metric
    done = _read_parts(folder)
    pending = [u for u in units if u.key not in done]
    bs = cfg.models.batch_size
    batches = [pending[i:i + bs] for i in range(0, len(pending), bs)]
    state.wait_for_everyone()  # every process has read the same `done` before anyone writes
    with state.split_between_processes(batches) as mine:
        if mine:
            scorer = _Scorer(metric, cfg, concepts, device)
            part = folder / f"part-{uuid.uuid4().hex[:12]}-r{state.process_index}.jsonl"
            lines: list[str] = []
            bar = tqdm(mine, desc=f"{metric} [{state.process_index}]", unit="batch", disable=not progress,
                       position=state.process_index)
            for batch in bar:
                for u, v in zip(batch, scorer.score(batch)):
                    lines.append(json.dumps({"key": u.key, "value": v}, sort_keys=True))
                atomic_write_text(part, "\n".join(lines) + "\n")
            bar.close()
            del scorer  # free the model (and its accelerator memory) before the next metric loads
            _free_accelerator_memory()
    state.wait_for_everyone()
    if state.is_main_process and folder.is_dir():
        merged = _read_parts(folder)
        text = "".join(json.dumps({"key": k, "value": merged[k]}, sort_keys=True) + "\n" for k in sorted(merged))
        atomic_write_text(folder / "scores.jsonl", text)
        for f in folder.glob("part-*.jsonl"):
            os.unlink(f)
    state.wait_for_everyone()
