"""Automatic evaluation of learned concepts (§5.3 and Table 2 of Lego), run by `lego evaluate`.

    from lego_inversion.evaluation import load_eval_config, run_evaluation
    run_evaluation(load_eval_config("eval.toml"), "eval_out")

Modules: config (typed TOML config), plan (generation plan, image folders, seed checks), models (BLIP-2 yes/no
VQA, OWLv2/OWL-ViT/Grounding DINO counting, CLIP/DINOv2 embeddings), oracle (toy-world images judged by the toy
world's oracle), scoring (resumable sharded scoring), stats (Wilson intervals), report (aggregation), tables
(Table-2-shaped tables, Markdown, CSV), html (plots, HTML page), runner, cli. See docs/evaluation.md.
"""

from .config import EvalConfig, load_eval_config
from .runner import run_evaluation
from .stats import wilson_interval

__all__ = ["EvalConfig", "load_eval_config", "run_evaluation", "wilson_interval"]
