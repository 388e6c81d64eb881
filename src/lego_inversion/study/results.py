"""`lego study results`: majority vote per pair and win rates, as in Lego §5.3 / Table 2 "Human".

    from lego_inversion.study.results import analyze, to_markdown
    report = analyze(study, answers, drop_failing=True, max_failure_rate=0.0)
    print(to_markdown(report))

Per pair the majority of its raters decides which method wins; a pair with equal votes is a tie and is
listed as such (never silently dropped or split). Per concept and overall (per comparison "a vs b"):
win rate of "a" over decided pairs with a Wilson score interval, an exact two-sided sign test (ties
excluded; n/a, like the win rate, when no pair is decided), the share of individual votes, and Fleiss' kappa
over the raters' votes in its generalised form for pairs answered by unequal numbers of raters (`stats.py`).
Attention checks give each rater a failure rate; `drop_failing` removes raters whose rate exceeds
`max_failure_rate` first.

Names in the outputs come from users (concepts, methods, subjects, study name): results.md escapes them for
Markdown (no raw HTML, no table breaks), and the CSVs prefix a cell that a spreadsheet would run as a formula
(first character = + - @ tab or CR) with a single quote, as OWASP advises against CSV injection.
"""

from __future__ import annotations

import csv
import html
import io
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_path, atomic_write_json, atomic_write_text
from ..errors import UserError
from .model import Study
from .stats import fleiss_kappa, majority, sign_test, wilson_interval
from .storage import Answer

PAIR_FIELDS = ["comparison", "item", "concept", "subject", "seed", "method_a", "method_b", "votes_a", "votes_b",
               "outcome", "image_a", "image_b", "source_a", "source_b"]
SUMMARY_FIELDS = ["comparison", "concept", "pairs", "answered_pairs", "wins_a", "wins_b", "ties", "unanswered",
                  "win_rate_a", "ci_low", "ci_high", "sign_test_p", "votes_a", "votes_b", "vote_share_a",
                  "fleiss_kappa", "mean_raters_per_pair"]


_MD_SPECIAL = re.compile(r"([\\`*\[\]|~$])")  # "$" too: GitHub renders $...$ as math
_MD_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")  # inside a word ("melted_cube") it is literal
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def md_escape(text) -> str:
    """`text` as literal Markdown on one line: HTML special characters as entities, Markdown syntax, `$` and `|`
    backslash-escaped (so a name can neither inject HTML nor break a table row)."""
    text = html.escape(" ".join(str(text).split()), quote=False)
    return _MD_UNDERSCORE.sub(r"\\_", _MD_SPECIAL.sub(r"\\\1", text))


def csv_safe(value):
    """A CSV cell that spreadsheets will not evaluate: strings starting like a formula get a leading quote."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


@dataclass
class AnalysisConfig:
    drop_failing: bool = False
    max_failure_rate: float = 0.0  # drop raters whose attention-check failure rate is above this
    confidence: float = 0.95

    def __post_init__(self):
        if not 0 <= self.max_failure_rate <= 1:
            raise UserError(f"--max-failure-rate must be in [0, 1], got {self.max_failure_rate}")
        if not 0 < self.confidence < 1:
            raise UserError(f"--confidence must be in (0, 1), got {self.confidence}")


def attention(study: Study, answers: Iterable[Answer], cfg: AnalysisConfig) -> dict:
    checks = {c.id: c.answer for c in study.checks}
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # rater -> [answered checks, failed]
    for a in answers:
        counts = per[a.rater]  # every rater is listed, also one who has not reached a check yet
        if a.item in checks:
            counts[0] += 1
            counts[1] += a.slot != checks[a.item]
    raters = []
    for r, (n, failed) in sorted(per.items()):
        rate = failed / n if n else 0.0
        raters.append({"rater": r, "checks_answered": n, "failed": failed, "failure_rate": rate,
                       "dropped": cfg.drop_failing and rate > cfg.max_failure_rate})
    total = sum(r["checks_answered"] for r in raters)
    return {"checks": len(checks), "raters": raters, "answers": total,
            "failure_rate": sum(r["failed"] for r in raters) / total if total else None,
            "dropped": [r["rater"] for r in raters if r["dropped"]]}


def _summary(comparison: str, concept: str, rows: list[dict], confidence: float) -> dict:
    wins_a = sum(r["outcome"] == "a" for r in rows)
    wins_b = sum(r["outcome"] == "b" for r in rows)
    ties = sum(r["outcome"] == "tie" for r in rows)
    unanswered = sum(r["outcome"] == "unanswered" for r in rows)
    votes_a, votes_b = sum(r["votes_a"] for r in rows), sum(r["votes_b"] for r in rows)
    low, high = wilson_interval(wins_a, wins_a + wins_b, confidence)
    answered = [r for r in rows if r["outcome"] != "unanswered"]
    return {"comparison": comparison, "concept": concept, "pairs": len(rows), "answered_pairs": len(answered),
            "wins_a": wins_a, "wins_b": wins_b, "ties": ties, "unanswered": unanswered,
            "win_rate_a": wins_a / (wins_a + wins_b) if wins_a + wins_b else math.nan,
            "ci_low": low, "ci_high": high, "sign_test_p": sign_test(wins_a, wins_b),
            "votes_a": votes_a, "votes_b": votes_b,
            "vote_share_a": votes_a / (votes_a + votes_b) if votes_a + votes_b else math.nan,
            "fleiss_kappa": fleiss_kappa([[r["votes_a"], r["votes_b"]] for r in answered]),
            "mean_raters_per_pair": (votes_a + votes_b) / len(answered) if answered else 0.0}


def analyze(study: Study, answers: list[Answer], cfg: AnalysisConfig | None = None) -> dict:
    """Everything `lego study results` reports, as a JSON-ready dict."""
    cfg = cfg or AnalysisConfig()
    unknown = sorted({a.item for a in answers if a.item not in study.items})
    if unknown:
        raise UserError(f"answers mention items that are not in {study.root / 'study.json'}: {unknown[:5]}; "
                        "are the answers from another study?")
    att = attention(study, answers, cfg)
    dropped = set(att["dropped"])
    kept = [a for a in answers if a.rater not in dropped]
    votes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for a in kept:
        votes[a.item][a.slot == "b"] += 1
    pair_rows = []
    for item in study.pairs:
        va, vb = votes[item.id]
        pair_rows.append({"comparison": item.comparison, "item": item.id, "concept": item.concept,
                          "subject": item.subject, "seed": item.seed, "method_a": item.a.method,
                          "method_b": item.b.method, "votes_a": va, "votes_b": vb,
                          "outcome": majority(va, vb) if va + vb else "unanswered",
                          "image_a": item.a.image, "image_b": item.b.image,
                          "source_a": item.a.source, "source_b": item.b.source})
    comparisons = []
    for comp in dict.fromkeys(r["comparison"] for r in pair_rows):
        rows = [r for r in pair_rows if r["comparison"] == comp]
        concepts = [_summary(comp, c, [r for r in rows if r["concept"] == c], cfg.confidence)
                    for c in sorted({r["concept"] for r in rows})]
        comparisons.append({"comparison": comp, "a": rows[0]["method_a"], "b": rows[0]["method_b"],
                            "concepts": concepts, "overall": _summary(comp, "ALL", rows, cfg.confidence)})
    return {"study": study.name, "question": study.question, "methods": study.methods,
            "raters_per_pair": study.raters_per_pair, "confidence": cfg.confidence,
            "answers": len(answers), "answers_used": len(kept), "raters": len({a.rater for a in answers}),
            "attention": att, "comparisons": comparisons, "pairs": pair_rows}


def _fmt(x, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if pct:
        return f"{100 * x:.1f}%"
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def to_markdown(report: dict) -> str:
    conf = round(100 * report["confidence"])
    lines = [f"# Study results: {md_escape(report['study'])}", "",
             (f"{report['answers_used']} of {report['answers']} answers used from {report['raters']} raters; "
              f"{report['raters_per_pair']} raters per pair planned. Majority vote per pair; ties are listed, "
              f"not split. Win rate = wins of A / decided pairs, {conf}% Wilson interval; p = exact two-sided "
              "sign test (ties excluded); kappa = Fleiss' kappa, generalised to pairs answered by unequal numbers "
              "of raters (the same as Fleiss' 1971 kappa when every pair has the same number)."), ""]
    for comp in report["comparisons"]:
        lines += [f"## {md_escape(comp['a'])} (A) vs {md_escape(comp['b'])} (B)", "",
                  (f"| concept | pairs | A wins | B wins | ties | unanswered | A win rate | {conf}% CI | p | "
                   "A vote share | kappa |"), "|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in comp["concepts"] + [comp["overall"]]:
            name = "**overall**" if s["concept"] == "ALL" else md_escape(s["concept"])
            lines.append(f"| {name} | {s['pairs']} | {s['wins_a']} | {s['wins_b']} | {s['ties']} | "
                         f"{s['unanswered']} | {_fmt(s['win_rate_a'], True)} | "
                         f"[{_fmt(s['ci_low'], True)}, {_fmt(s['ci_high'], True)}] | {_fmt(s['sign_test_p'])} | "
                         f"{_fmt(s['vote_share_a'], True)} | {_fmt(s['fleiss_kappa'])} |")
        lines.append("")
    att = report["attention"]
    lines += ["## Attention checks", ""]
    if not att["checks"]:
        lines.append("The study has no attention checks.")
    else:
        lines.append(f"{att['checks']} checks; overall failure rate {_fmt(att['failure_rate'], True)}; "
                     f"dropped raters: {', '.join(map(md_escape, att['dropped'])) or 'none'}.")
        lines += ["", "| rater | checks answered | failed | failure rate | dropped |", "|---|---|---|---|---|"]
        lines += [f"| {md_escape(r['rater'])} | {r['checks_answered']} | {r['failed']} | "
                  f"{_fmt(r['failure_rate'], True)} | {'yes' if r['dropped'] else 'no'} |" for r in att["raters"]]
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict], fields: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: csv_safe(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


def summary_csv(report: dict) -> str:
    return _csv([s for c in report["comparisons"] for s in c["concepts"] + [c["overall"]]], SUMMARY_FIELDS)


def pairs_csv(report: dict) -> str:
    return _csv(report["pairs"], PAIR_FIELDS)


def _json_safe(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def _plain(name: str) -> str:
    """A name as literal matplotlib text ("$...$" would be parsed as math)."""
    return name.replace("$", r"\$")


def plot(report: dict, path: Path) -> Path:
    """Bar chart of A's win rate per concept (one panel per comparison) with Wilson error bars and 50% line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comps = report["comparisons"]
    fig, axes = plt.subplots(1, len(comps), figsize=(max(4, 1.2 * max(len(c["concepts"]) + 1 for c in comps))
                                                     * len(comps), 4), squeeze=False)
    for ax, comp in zip(axes[0], comps):
        rows = comp["concepts"] + [comp["overall"]]
        names = [_plain(r["concept"]) if r["concept"] != "ALL" else "overall" for r in rows]
        rates = [0 if math.isnan(r["win_rate_a"]) else 100 * r["win_rate_a"] for r in rows]
        err = [[0 if math.isnan(r["ci_low"]) else max(0.0, rate - 100 * r["ci_low"]) for r, rate in zip(rows, rates)],
               [0 if math.isnan(r["ci_high"]) else max(0.0, 100 * r["ci_high"] - rate) for r, rate in zip(rows, rates)]]
        ax.bar(names, rates, yerr=err, capsize=4, color=["#4c72b0"] * (len(rows) - 1) + ["#dd8452"])
        ax.axhline(50, color="grey", linestyle="--", linewidth=1)
        ax.set_ylim(0, 100)
        ax.set_ylabel(f"{_plain(comp['a'])} preferred over {_plain(comp['b'])} (% of pairs)")
        ax.set_title(f"{_plain(comp['a'])} vs {_plain(comp['b'])}")
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def write_outputs(report: dict, out: Path) -> list[Path]:
    """results.md, results.json, summary.csv, pairs.csv and win_rates.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_text(out / "results.md", to_markdown(report)),
               atomic_write_json(out / "results.json", _json_safe(report)),
               atomic_write_text(out / "summary.csv", summary_csv(report)),
               atomic_write_text(out / "pairs.csv", pairs_csv(report))]
    written.append(plot(report, out / "win_rates.png"))
    return written


def render(report: dict, fmt: str) -> str:
    import json

    if fmt == "md":
        return to_markdown(report)
    if fmt == "csv":
        return summary_csv(report)
    return json.dumps(_json_safe(report), indent=2) + "\n"
