"""Amazon Mechanical Turk: export a batch-input CSV, import a batch-results CSV (the paper's §5.3 setup).

    lego study mturk-export studies/melted --base-url https://my.host/melted/images/ --out batch_input.csv
    # upload images/ to that URL, create a batch with hit_template.html, MaxAssignments = raters per pair
    lego study results studies/melted --mturk Batch_123_batch_results.csv

Input CSV columns: item, question, left_url, right_url, ref_url_1..ref_url_N (unused ones empty). Left/right
order is drawn per row (MTurk shows one row identically to all its workers). Results: each row needs
WorkerId, Input.item, Input.left_url and the answer, either `Answer.choice` = left|right or the boolean
columns `Answer.choice.left` / `Answer.choice.right` that crowd-radio-group writes. Rejected assignments
are skipped; a worker answering the same item twice keeps the first answer (as in the web app).
"""

from __future__ import annotations

import csv
import io
import random
import re
from pathlib import Path
from urllib.parse import urlparse

from ..atomic import atomic_write_text
from ..errors import UserError
from .model import IMAGE_NAME_RE, Study
from .storage import Answer

TEMPLATE = """<!-- MTurk HIT layout for `lego study mturk-export` (paste into the batch's design layout) -->
<script src="https://assets.crowd.aws/crowd-html-elements.js"></script>
<crowd-form>
  <p><strong>Reference images</strong></p>
  <p>{refs}</p>
  <p><strong>${{question}}</strong></p>
  <crowd-radio-group>
    <crowd-radio-button name="left" value="left"><img src="${{left_url}}" width="320"></crowd-radio-button>
    <crowd-radio-button name="right" value="right"><img src="${{right_url}}" width="320"></crowd-radio-button>
  </crowd-radio-group>
</crowd-form>
"""


def export_batch(study: Study, base_url: str, out: Path, template: Path | None = None, seed: int = 0) -> int:
    """Write the batch-input CSV (one row per pair and per attention check); returns the number of rows."""
    parsed = urlparse(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UserError(f"--base-url {base_url!r}: must be an http(s) URL where the study's images/ are hosted")
    base = base_url if base_url.endswith("/") else base_url + "/"
    n_refs = max((len(study.references_for(i.concept)) for i in study.items.values()), default=0)
    rng = random.Random(seed)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["item", "question", "left_url", "right_url"] + [f"ref_url_{i + 1}" for i in range(n_refs)])
    for item in study.items.values():
        left, right = (item.b, item.a) if rng.random() < 0.5 else (item.a, item.b)
        refs = [base + r for r in study.references_for(item.concept)]
        writer.writerow([item.id, study.question, base + left.image, base + right.image]
                        + refs + [""] * (n_refs - len(refs)))
    atomic_write_text(out, buf.getvalue())
    if template is not None:
        refs = " ".join(f'<img src="${{ref_url_{i + 1}}}" width="120">' for i in range(n_refs))
        atomic_write_text(template, TEMPLATE.format(refs=refs))
    return len(study.items)


def _truthy(value: str | None) -> bool:
    return str(value or "").strip().lower() in ("true", "1", "on", "yes")


def import_batch(study: Study, path: Path) -> tuple[list[Answer], dict]:
    """Read a batch-results CSV into answers (rater = "mturk:<WorkerId>"); also returns import counts."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UserError(f"--mturk {path}: cannot read ({exc.strerror})") from None
    reader = csv.DictReader(io.StringIO(text))
    need = {"WorkerId", "Input.item", "Input.left_url"}
    missing = need - set(reader.fieldnames or [])
    if missing:
        raise UserError(f"{path}: missing column(s) {sorted(missing)}; is this an MTurk batch-results CSV "
                        "of a batch made with `lego study mturk-export`?")
    answers: list[Answer] = []
    seen: set[tuple[str, str]] = set()
    counts = {"rows": 0, "rejected": 0, "duplicates": 0}
    for n, row in enumerate(reader, 2):
        counts["rows"] += 1
        if (row.get("AssignmentStatus") or "").strip().lower() == "rejected":
            counts["rejected"] += 1
            continue
        where = f"{path}:{n}"
        worker, item_id = (row.get("WorkerId") or "").strip(), (row.get("Input.item") or "").strip()
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", worker):
            raise UserError(f"{where}: WorkerId {worker!r} is empty or malformed")
        item = study.items.get(item_id)
        if item is None:
            raise UserError(f"{where}: Input.item {item_id!r} is not in this study; wrong study folder?")
        side = (row.get("Answer.choice") or "").strip().lower()
        if not side:
            flags = [s for s in ("left", "right") if _truthy(row.get(f"Answer.choice.{s}"))]
            side = flags[0] if len(flags) == 1 else ""
        if side not in ("left", "right"):
            raise UserError(f"{where}: no answer; need Answer.choice = left|right (or Answer.choice.left/right)")
        left_name = (row.get("Input.left_url") or "").rsplit("/", 1)[-1]
        if not IMAGE_NAME_RE.match(left_name) or left_name not in (item.a.image, item.b.image):
            raise UserError(f"{where}: Input.left_url does not show one of item {item_id}'s images")
        left_slot = "a" if left_name == item.a.image else "b"
        slot = left_slot if side == "left" else ("b" if left_slot == "a" else "a")
        rater = f"mturk:{worker}"
        if (rater, item_id) in seen:
            counts["duplicates"] += 1
            continue
        seen.add((rater, item_id))
        answers.append(Answer(rater, item_id, slot, side))
    return answers, counts
