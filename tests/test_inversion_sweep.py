"""benchmarks/inversion_sweep.py: the summary groups readings by setting, method and step (methods never mix)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
_spec = importlib.util.spec_from_file_location("test_inversion_sweep_module",
                                               ROOT / "benchmarks" / "inversion_sweep.py")
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)


def _reading(out: Path, setting: str, concept: str, method: str, seed: int, step: int, success: float,
             recon: float, record_method: bool) -> None:
    metrics = {"success": success, "leakage": 0.5 - success / 2, "fidelity": 1.0, "clean": success / 2}
    record = {"transfer": metrics | {"n": 6}, "recon": metrics | {"success": recon, "n": 3}, "step": step,
              "concept": concept, "seed": seed, "guidance": None}
    if record_method:
        record["method"] = method
    (out / "evals").mkdir(parents=True, exist_ok=True)
    name = f"{setting}-{concept}-{method}-s{seed}-gNone-{step}.json"
    (out / "evals" / name).write_text(json.dumps(record))


def test_method_read_from_name_when_not_recorded():
    record = {"concept": "melted_cube", "seed": 2, "guidance": None, "step": 100}
    assert sweep.method_of("long-melted_cube-ss-only-s2-gNone-100", record) == "ss-only"
    assert sweep.method_of("x-melted_cube-ti-s2-gNone-100", record | {"method": "lego"}) == "lego"


def test_summary_keeps_methods_apart(tmp_path):
    # two concepts x two methods at one step; one file per method records its method, the others do not
    _reading(tmp_path, "long", "melted_cube", "lego", 0, 100, 1.0, 0.5, True)
    _reading(tmp_path, "long", "waving_ball", "lego", 0, 100, 0.2, 0.0, False)
    _reading(tmp_path, "long", "melted_cube", "ss-only", 0, 100, 0.4, 1.0, False)
    _reading(tmp_path, "long", "waving_ball", "ss-only", 0, 100, 0.0, 1.0, True)
    _reading(tmp_path, "long", "melted_cube", "lego", 0, 200, 0.6, 0.0, False)
    summary = sweep.summarize(tmp_path)
    assert sorted(summary) == ["long|lego|100|None", "long|lego|200|None", "long|ss-only|100|None"]
    lego, ss = summary["long|lego|100|None"], summary["long|ss-only|100|None"]
    assert abs(lego["success"] - 0.6) < 1e-9 and abs(lego["clean"] - 0.3) < 1e-9   # (1.0 + 0.2) / 2, halves
    assert abs(lego["recon_success"] - 0.25) < 1e-9 and lego["cells"] == 2
    assert abs(ss["success"] - 0.2) < 1e-9 and abs(ss["leakage"] - 0.4) < 1e-9     # 0.5 - mean / 2
    assert summary["long|lego|200|None"]["cells"] == 1
    assert lego["per_concept"]["waving_ball-s0"] == [0.2, 0.4, 0.0]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
