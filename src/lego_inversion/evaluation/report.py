"""Aggregate per-image scores into a Table-2-shaped report (per concept, per method) as JSON, CSV and Markdown.

    report = build_report(cfg, concepts, records, out_dir)       # dict, also report.json
    write_report(report, cfg, concepts, records, out_dir)        # report.{json,csv,md,html}, plots/*.png

Metrics (rates with 95% Wilson intervals; means with 95% normal intervals):
- `vqa`: images whose every question gets log p("yes") > log p("no") out of N (the "LLM" column of Table 2).
- `count`: images with exactly the requested number of detected subjects (the cardinality rows of Table 2);
  plus the histogram of counts. Detections: score >= models.detector_threshold, then NMS at models.nms_iou.
- `clip_concept`: CLIP cosine of the image with the concept applied to the target in words.
- `clip_exemplar` / `dino_exemplar`: mean image cosine to the exemplar subject images (appearance leakage).
- `clip_target`: CLIP cosine with "a photo of a {target}";  `clip_leakage` = clip_exemplar - clip_target.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from pathlib import Path

from ..atomic import atomic_write_json, atomic_write_text
from .config import EvalConfig
from .models import count_detections
from .plan import ImageRecord, ResolvedConcept
from .scoring import load_scores, metric_units
from .stats import count_histogram, mean_summary, rate_summary

RATE_METRICS = ("vqa", "count")
MEAN_METRICS = ("clip_concept", "clip_target", "clip_exemplar", "clip_leakage", "dino_exemplar")
LABELS = {"vqa": "VQA yes", "count": "exact count", "clip_concept": "CLIP concept", "clip_target": "CLIP target",
          "clip_exemplar": "CLIP exemplar", "clip_leakage": "CLIP leakage", "dino_exemplar": "DINO exemplar"}


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
            else:
                slot.update(v)
    return values


def _summaries(cfg, rc: ResolvedConcept, recs: list[ImageRecord], values) -> dict:
    out: dict = {}
    vqa = [values["vqa"][r] for r in recs if r in values.get("vqa", {})]
    if vqa and rc.questions:
        per_q = {}
        for qt in rc.questions:
            ans = [v["answers"].get(qt.replace("{target}", r.target)) for r, v in
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
    return out


def build_report(cfg: EvalConfig, concepts: list[ResolvedConcept], records: list[ImageRecord],
                 out_dir: Path) -> dict:
    """The report as a JSON-ready dict: rows per (concept, method), with per-target breakdowns."""
    values = per_image_values(cfg, concepts, records, out_dir)
    groups: dict[tuple[str, str], list[ImageRecord]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.target, r.seed)):
        groups[(r.concept, r.method)].append(r)
    rows = []
    for rc in concepts:
        for method in rc.methods:
            recs = groups.get((rc.name, method), [])
            targets = sorted({r.target for r in recs})
            rows.append({
                "concept": rc.name, "method": method, "n_images": len(recs), "targets": targets,
                "metrics": _summaries(cfg, rc, recs, values),
                "per_target": {t: _summaries(cfg, rc, [r for r in recs if r.target == t], values) for t in targets},
            })
    return {
        "methods": method_order(cfg, concepts),
        "concepts": [{"name": rc.name, "description": rc.description, "questions": rc.questions,
                      "count": rc.count, "exemplars": len(rc.exemplars)} for rc in concepts],
        "settings": {"num_images": cfg.num_images, "seed": cfg.seed, "metrics": list(cfg.metrics),
                     "vqa_model": cfg.models.vqa, "detector": cfg.models.detector, "clip": cfg.models.clip,
                     "dino": cfg.models.dino, "detector_threshold": cfg.models.detector_threshold,
                     "nms_iou": cfg.models.nms_iou},
        "rows": rows,
    }


def metric_names(report: dict) -> list[str]:
    present = {m for row in report["rows"] for m in row["metrics"]}
    return [m for m in RATE_METRICS + MEAN_METRICS if m in present]


def cell(summary: dict | None, metric: str) -> str:
    """One table cell: `k/n (rate%, lo–hi%)` for rates, `mean [lo, hi]` for means, `–` if missing."""
    if not summary:
        return "–"
    if metric in RATE_METRICS:
        if summary["n"] == 0:
            return "0/0"
        return (f"{summary['k']}/{summary['n']} ({100 * summary['rate']:.1f}%, "
                f"{100 * summary['ci_low']:.1f}–{100 * summary['ci_high']:.1f}%)")
    return f"{summary['mean']:.3f} [{summary['ci_low']:.3f}, {summary['ci_high']:.3f}]"


def table_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and body of the Table-2-shaped table: one line per (concept, metric), one column per method."""
    methods = report["methods"]
    index = {(r["concept"], r["method"]): r for r in report["rows"]}
    body = []
    for c in report["concepts"]:
        for metric in metric_names(report):
            cells = [cell((index.get((c["name"], m)) or {}).get("metrics", {}).get(metric), metric) for m in methods]
            if all(x == "–" for x in cells):
                continue
            body.append([c["name"], LABELS[metric], *cells])
    return ["Concept", "Metric", *methods], body


def to_markdown(report: dict) -> str:
    header, body = table_rows(report)
    lines = ["# Lego evaluation (Table 2 layout)", "",
             f"Rates: count out of N with 95% Wilson interval. Means: 95% interval. "
             f"Detector threshold {report['settings']['detector_threshold']}.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    hist = [(r["concept"], r["method"], r["metrics"]["count"]) for r in report["rows"] if "count" in r["metrics"]]
    if hist:
        lines += ["", "## Count histograms", "",
                  "| Concept | Method | Requested | Histogram (count: images; zeros left out) |", "|---|---|---|---|"]
        for concept, method, c in hist:
            h = ", ".join(f"{k}: {v}" for k, v in c["histogram"].items() if v)
            lines.append(f"| {concept} | {method} | {c['requested']} | {h} |")
    return "\n".join(lines) + "\n"


def to_csv(report: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["concept", "method", "target", "metric", "n", "k", "rate", "mean", "ci_low", "ci_high"])
    for row in report["rows"]:
        scopes = [("", row["metrics"])] + sorted(row["per_target"].items())
        for target, metrics in scopes:
            for metric in RATE_METRICS + MEAN_METRICS:
                s = metrics.get(metric)
                if s:
                    w.writerow([row["concept"], row["method"], target, metric, s["n"], s.get("k", ""),
                                s.get("rate", ""), s.get("mean", ""), s["ci_low"], s["ci_high"]])
    return buf.getvalue()


def write_report(report: dict, cfg: EvalConfig, concepts: list[ResolvedConcept], records: list[ImageRecord],
                 out_dir: Path) -> None:
    """report.json, report.csv, report.md, plots/*.png and report.html, each written atomically."""
    from .html import write_html, write_plots

    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_text(out_dir / "report.csv", to_csv(report))
    atomic_write_text(out_dir / "report.md", to_markdown(report))
    plots = write_plots(report, out_dir / "plots")
    write_html(report, plots, cfg, records, out_dir)
