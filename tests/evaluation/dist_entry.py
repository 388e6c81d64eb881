"""Entry point for the two-process test: `torchrun --nproc_per_node 2 dist_entry.py evaluate CFG --out DIR`.

Installs the stand-in generator (as the fake_generation fixture does) and runs the real CLI in each process.
With EVAL_TEST_LOG set, each process logs the seeds it generated and the score keys it computed to
EVAL_TEST_LOG/rank<R>.jsonl.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import eval_helpers

sys.modules["lego_inversion.generation"] = eval_helpers.fake_generation_module()

if os.environ.get("EVAL_TEST_LOG"):
    from lego_inversion.evaluation import scoring

    log = Path(os.environ["EVAL_TEST_LOG"]) / f"rank{os.environ.get('RANK', '0')}.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)

    def _log(kind, items):
        with open(log, "a") as fh:
            fh.write(json.dumps({"kind": kind, "items": items}) + "\n")

    real_generate, real_score = eval_helpers.FakeGenerator.generate, scoring._Scorer.score

    def generate(self, prompts, seeds, **kw):
        _log("generate", [[p, s, *self.concepts] for p, s in zip(prompts, seeds)])
        return real_generate(self, prompts, seeds, **kw)

    def score(self, batch):
        _log("score", [u.key for u in batch])
        return real_score(self, batch)

    eval_helpers.FakeGenerator.generate, scoring._Scorer.score = generate, score

sys.exit(eval_helpers.run_cli(sys.argv[1:]))
