"""Aggregate per-image scores into a Table-2-shaped report (per concept, per method) and write its files.

    report = build_report(cfg, concepts, records, out_dir)       # dict, also report.json
    write_report(report, cfg, concepts, records, out_dir)        # report.{json,csv,md,html}, plots/*.png

Metrics (rates with 95% Wilson intervals; means with 95% normal intervals):
- `vqa`: images whose every question gets log p("yes") > log p("no") out of N (the "LLM" column of Table 2).
- `count`: images with exactly the requested number of detected subjects (the cardinality rows of Table 2);
  plus the histogram of counts. Detections: score >= models.detector_threshold, then NMS at models.nms_iou.
- `clip_concept`: CLIP cosine of the image with the concept applied to the target in words.
- `clip_exemplar` / `dino_exemplar`: mean image cosine to the exemplar subject images (appearance leakage).
- `clip_target`: CLIP cosine with "a photo of a {target}";  `clip_leakage` = clip_exemplar - clip_target.
- `oracle_*` (toy-world models): the toy-world oracle's judgements, see evaluation.oracle.
Tables, Markdown and CSV are built by evaluation.tables, the plots and page by evaluation.html.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from ..atomic import atomic_write_json, atomic_write_text
from ..manifest import ImageRecord
from .config import EvalConfig
from .html import write_html, write_plots
from .models import count_detections
from .oracle import JUDGEMENTS, judge
from .plan import ResolvedConcept
from .scoring import load_scores, metric_units
from .stats import count_histogram, mean_summary, rate_summary
from .tables import to_csv, to_markdown


def _r(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)


def _clean(d: dict) -> dict:
    return {k: (_r(v) if isinstance(v, float) else v) for k, v in d.items()}


def method_order(cfg: EvalConfig, concepts: list[ResolvedConcept]) -> list[str]:
    order: list[str] = list(cfg.methods or [])
    for rc in concepts:
        order += [m for m in rc.methods if m not in order]
    return order


def per_image_values(cfg: EvalConfig, concepts: list[ResolvedConcept], records: list[ImageRecord],
                     out_dir: Path) -> dict[str, dict[ImageRecord, dict]]:
    """metric -> record -> derived per-image values (what the report aggregates)."""
    by_name = {rc.name: rc for rc in concepts}
    values: dict[str, dict[ImageRecord, dict]] = defaultdict(dict)
    for metric in cfg.metrics:
        scores = load_scores(out_dir, metric)
        for u in metric_units(metric, records, concepts, cfg, out_dir):
            v = scores.get(u.key)
            if v is None:
                continue
            slot = values[metric].setdefault(u.record, {})
            if metric == "vqa":
                slot.setdefault("answers", {})[u.text] = bool(v["yes"] > v["no"])
            elif metric == "count":
                n = count_detections(v["scores"], v["boxes"], cfg.models.detector_threshold, cfg.models.nms_iou)
                slot.update(count=n, correct=(n == by_name[u.concept].count))
            elif metric == "oracle":
                slot.update(judge(v, by_name[u.concept].truth, u.record.subject), counted=v["count"])
            else:
                slot.update(v)
    return values


def _summaries(cfg, rc: ResolvedConcept, recs: list[ImageRecord], values) -> dict:
    out: dict = {}
    vqa = [values["vqa"][r] for r in recs if r in values.get("vqa", {})]
    if vqa and rc.questions:
        per_q = {}
        for qt in rc.questions:
            ans = [v["answers"].get(rc.question(qt, r.subject)) for r, v in
                   zip([r for r in recs if r in values["vqa"]], vqa)]
            per_q[qt] = _clean(rate_summary(sum(1 for a in ans if a), len(ans)))
        k = sum(1 for v in vqa if v["answers"] and all(v["answers"].values()))
        out["vqa"] = {**_clean(rate_summary(k, len(vqa))), "questions": per_q}
    cnt = [values["count"][r] for r in recs if r in values.get("count", {})]
    if cnt:
        counts = [v["count"] for v in cnt]
        out["count"] = {**_clean(rate_summary(sum(v["correct"] for v in cnt), len(cnt))),
                        "requested": rc.count, "histogram": count_histogram(counts),
                        "mean_count": _r(sum(counts) / len(counts))}
    clip = [values["clip"][r] for r in recs if r in values.get("clip", {})]
    if clip:
        out["clip_concept"] = _clean(mean_summary([v["concept"] for v in clip]))
        out["clip_target"] = _clean(mean_summary([v["target"] for v in clip]))
        if all(v.get("exemplar") is not None for v in clip):
            out["clip_exemplar"] = _clean(mean_summary([v["exemplar"] for v in clip]))
            out["clip_leakage"] = _clean(mean_summary([v["exemplar"] - v["target"] for v in clip]))
    dino = [values["dino"][r] for r in recs if r in values.get("dino", {})]
    if dino and all(v.get("exemplar") is not None for v in dino):
        out["dino_exemplar"] = _clean(mean_summary([v["exemplar"] for v in dino]))
    judged = [values["oracle"][r] for r in recs if r in values.get("oracle", {})]
    for key in JUDGEMENTS if judged else ():
        if judged[0][key] is None:  # `count` of a concept that is not a cardinality concept
            continue
        out["oracle_" + key] = _clean(rate_summary(sum(bool(v[key]) for v in judged), len(judged)))
    if "oracle_count" in out:
        counts = [v["counted"] for v in judged]
        out["oracle_count"].update(requested=rc.truth["count"], histogram=count_histogram(counts),
                                   mean_count=_r(sum(counts) / len(counts)))
    return out


def _oracle_name(cfg: EvalConfig) -> str | None:
    from .oracle import oracle_id

    return oracle_id() if "oracle" in cfg.metrics else None


def build_report(cfg: EvalConfig, concepts: list[ResolvedConcept], records: list[ImageRecord],
                 out_dir: Path) -> dict:
    """The report as a JSON-ready dict: rows per (concept, method), with per-target breakdowns."""
    values = per_image_values(cfg, concepts, records, out_dir)
    groups: dict[tuple[str, str], list[ImageRecord]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.subject, r.seed)):
        groups[(r.concept, r.method)].append(r)
    rows = []
    for rc in concepts:
        for method in rc.methods:
            recs = groups.get((rc.name, method), [])
            targets = sorted({r.subject for r in recs})
            rows.append({
                "concept": rc.name, "method": method, "n_images": len(recs), "targets": targets,
                "metrics": _summaries(cfg, rc, recs, values),
                "per_target": {t: _summaries(cfg, rc, [r for r in recs if r.subject == t], values) for t in targets},
            })
    return {
        "methods": method_order(cfg, concepts),
        "concepts": [{"name": rc.name, "description": rc.description, "questions": rc.questions,
                      "count": rc.count, "exemplars": len(rc.exemplars), "toyworld": rc.truth} for rc in concepts],
        "settings": {"num_images": cfg.num_images, "seed": cfg.seed, "metrics": list(cfg.metrics),
                     "vqa_model": cfg.models.vqa, "detector": cfg.models.detector, "clip": cfg.models.clip,
                     "dino": cfg.models.dino, "detector_threshold": cfg.models.detector_threshold,
                     "nms_iou": cfg.models.nms_iou, "oracle": _oracle_name(cfg)},
        "rows": rows,
    }


def write_report(report: dict, cfg: EvalConfig, concepts: list[ResolvedConcept], records: list[ImageRecord],
                 out_dir: Path) -> None:
    """report.json, report.csv, report.md, plots/*.png and report.html, each written atomically."""
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_text(out_dir / "report.csv", to_csv(report))
    atomic_write_text(out_dir / "report.md", to_markdown(report))
    plots = write_plots(report, out_dir / "plots")
    write_html(report, plots, cfg, records, out_dir)
