"""The report's metric names, labels and Table-2-shaped tables (text cells, Markdown, CSV); used by report and html.

    header, body = table_rows(report)        # one line per (concept, metric), one column per method
    cell(summary, "vqa")                     # "92/200 (46.0%, 39.2–52.9%)"
    to_markdown(report); to_csv(report)

`report` is the dict of `report.build_report`. This module reads it and nothing else, so both the report writer
and the HTML page depend on it and not on each other.
"""

from __future__ import annotations

import csv
import io

ORACLE_METRICS = ("oracle_concept", "oracle_variant", "oracle_count", "oracle_leakage", "oracle_fidelity")
RATE_METRICS = ("vqa", "count", *ORACLE_METRICS)
MEAN_METRICS = ("clip_concept", "clip_target", "clip_exemplar", "clip_leakage", "dino_exemplar")
HISTOGRAM_METRICS = ("count", "oracle_count")  # rates that also carry a histogram of counted subjects
LABELS = {"vqa": "VQA yes", "count": "exact count", "clip_concept": "CLIP concept", "clip_target": "CLIP target",
          "clip_exemplar": "CLIP exemplar", "clip_leakage": "CLIP leakage", "dino_exemplar": "DINO exemplar",
          "oracle_concept": "oracle: concept", "oracle_variant": "oracle: personalized variant",
          "oracle_count": "oracle: exact count", "oracle_leakage": "oracle: exemplar appearance (leakage)",
          "oracle_fidelity": "oracle: target subject (fidelity)"}


def metric_names(report: dict) -> list[str]:
    """The report's metrics in table order."""
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
    settings = report["settings"]
    detector = f" Detector threshold {settings['detector_threshold']}." if "count" in settings["metrics"] else ""
    lines = ["# Lego evaluation (Table 2 layout)", "",
             f"Rates: count out of N with 95% Wilson interval. Means: 95% interval.{detector}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    hist = [(r["concept"], r["method"], LABELS[m], r["metrics"][m]) for m in HISTOGRAM_METRICS
            for r in report["rows"] if m in r["metrics"]]
    if hist:
        lines += ["", "## Count histograms", "",
                  "| Concept | Method | Counted by | Requested | Histogram (count: images; zeros left out) |",
                  "|---|---|---|---|---|"]
        for concept, method, label, c in hist:
            h = ", ".join(f"{k}: {v}" for k, v in c["histogram"].items() if v)
            lines.append(f"| {concept} | {method} | {label} | {c['requested']} | {h} |")
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
