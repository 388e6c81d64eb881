"""Bar charts with confidence intervals (PNG, matplotlib Agg) and the self-contained HTML report page.

    plots = write_plots(report, out_dir / "plots")           # {metric: Path}
    write_html(report, plots, cfg, records, out_dir)         # out_dir/report.html, images by relative path

The page holds the Table-2-shaped table, the plots and, per concept, an image grid with one row per target
subject and one column per method (the same seeds in every column). No network assets.
"""

from __future__ import annotations

import html
import os
from collections import defaultdict
from pathlib import Path

from ..atomic import atomic_write, atomic_write_text
from ..manifest import ImageRecord
from .config import EvalConfig
from .tables import LABELS, RATE_METRICS, metric_names, table_rows


def write_plots(report: dict, plot_dir: Path) -> dict[str, Path]:
    """One grouped bar chart per metric: concepts on x, one bar per method, 95% interval as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = report["methods"]
    index = {(r["concept"], r["method"]): r["metrics"] for r in report["rows"]}
    out = {}
    for metric in metric_names(report):
        concepts = [c["name"] for c in report["concepts"]
                    if any(metric in index.get((c["name"], m), {}) for m in methods)]
        fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(concepts) * max(1, len(methods)) / 2 + 2), 3.6))
        width = 0.8 / max(1, len(methods))
        for j, m in enumerate(methods):
            xs, ys, lo, hi = [], [], [], []
            for i, c in enumerate(concepts):
                s = index.get((c, m), {}).get(metric)
                if not s or s.get("n", 0) == 0:
                    continue
                v = s["rate"] if metric in RATE_METRICS else s["mean"]
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(v)
                lo.append(max(0.0, v - s["ci_low"]))
                hi.append(max(0.0, s["ci_high"] - v))
            if xs:
                ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=m)
        ax.set_xticks(range(len(concepts)))
        ax.set_xticklabels(concepts, rotation=20, ha="right")
        ax.set_ylabel("rate" if metric in RATE_METRICS else "cosine")
        if metric in RATE_METRICS:
            ax.set_ylim(0, 1)
        ax.set_title(LABELS[metric] + " (95% interval)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = plot_dir / f"{metric}.png"
        atomic_write(path, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=100))
        plt.close(fig)
        out[metric] = path
    return out


_CSS = """body{font-family:sans-serif;margin:1.5em;color:#222} table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #bbb;padding:4px 8px;font-size:13px} th{background:#eee}
.grid img{width:128px;height:128px;object-fit:cover;margin:1px} .grid td{vertical-align:top}
.plots img{max-width:48%;margin:4px}"""


def _table_html(report: dict) -> str:
    header, body = table_rows(report)
    h = "".join(f"<th>{html.escape(x)}</th>" for x in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in row) + "</tr>" for row in body)
    return f"<table><tr>{h}</tr>{rows}</table>"


def _grid_html(concept: str, methods: list[str], records: list[ImageRecord], k: int, out_dir: Path) -> str:
    by: dict[tuple[str, str], list[ImageRecord]] = defaultdict(list)
    for r in records:
        if r.concept == concept:
            by[(r.subject, r.method)].append(r)
    targets = sorted({t for t, _ in by})
    present = [m for m in methods if any((t, m) in by for t in targets)]
    head = "<tr><th>target</th>" + "".join(f"<th>{html.escape(m)}</th>" for m in present) + "</tr>"
    rows = []
    for t in targets:
        cells = []
        for m in present:
            imgs = sorted(by.get((t, m), []), key=lambda r: r.seed)[:k]
            cells.append("<td>" + "".join(
                f'<img src="{html.escape(Path(os.path.relpath(r.path.resolve(), out_dir.resolve())).as_posix())}"'
                f' title="seed {r.seed}" alt="{html.escape(m)} seed {r.seed}">' for r in imgs) + "</td>")
        rows.append(f"<tr><th>{html.escape(t)}</th>{''.join(cells)}</tr>")
    return f'<table class="grid">{head}{"".join(rows)}</table>'


def write_html(report: dict, plots: dict[str, Path], cfg: EvalConfig, records: list[ImageRecord],
               out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    s = report["settings"]
    judges = {"vqa": f"VQA: {s['vqa_model']}", "count": f"detector: {s['detector']} (threshold "
              f"{s['detector_threshold']})", "clip": f"CLIP: {s['clip']}", "dino": f"DINO: {s['dino']}",
              "oracle": f"toy-world oracle: {s.get('oracle')}"}
    used = "; ".join(html.escape(judges[m]) for m in s["metrics"] if m in judges)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Lego evaluation</title>"
             f"<style>{_CSS}</style></head><body><h1>Lego evaluation</h1>",
             f"<p>{s['num_images']} images per concept × target × method, seeds from {s['seed']}. {used}. "
             "Rates with 95% Wilson intervals, means with 95% intervals. Files: "
             "<a href='report.md'>report.md</a>, <a href='report.csv'>report.csv</a>, "
             "<a href='report.json'>report.json</a>.</p>",
             "<h2>Table 2 layout</h2>", _table_html(report), "<h2>Plots</h2><div class='plots'>"]
    parts += [f"<img src='plots/{p.name}' alt='{html.escape(LABELS[m])}'>" for m, p in plots.items()]
    parts.append("</div>")
    if cfg.grid_images:
        for c in report["concepts"]:
            parts.append(f"<h2>{html.escape(c['name'])}</h2>")
            if c.get("description"):
                parts.append(f"<p>{html.escape(c['description'])}</p>")
            parts.append(_grid_html(c["name"], report["methods"], records, cfg.grid_images, out_dir))
    parts.append("</body></html>\n")
    path = out_dir / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path
