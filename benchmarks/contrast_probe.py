"""How much the concept caption changes the denoising of images *without* the concept (docs/inversion_quality.md (an)).

    PYTHONPATH=src python3 benchmarks/contrast_probe.py CONCEPT_DIR RUN_DIR [CONCEPT_DIR RUN_DIR ...] [--draws 30]

For each trained run (its config.json and checkpoint.safetensors, the last rows) and, first, its initializer rows:
30 draws of the subject batch, each `without/` image denoised from the same ε and t once with its own caption
("a photo of a <subj>") and once with the concept batch's caption (<subj> the same, the concept tokens added), as
`contrast_weight` draws them. Prints the relative difference of the per-sample losses, (L_concept − L_subject) /
L_subject: its mean, median and the share under 0.02. Both readings use the same random streams.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from lego_inversion.concept import load_concept
from lego_inversion.config import InversionConfig
from lego_inversion.loop import predict
from lego_inversion.losses import diffusion_loss, diffusion_target
from lego_inversion.trainer import InversionRun, load_training_backbone


@torch.no_grad()
def relative_differences(run: InversionRun, draws: int) -> torch.Tensor:
    """(L_concept − L_subject) / L_subject per `without/` sample, over `draws` fresh draws from fixed streams."""
    run.generators["choices"].manual_seed(5)
    run.generators["noise"].manual_seed(6)
    out = []
    for _ in range(draws):
        draw = run.draw()
        target = diffusion_target(run.backbone.noise_scheduler, draw.latents, draw.noise, draw.timesteps)
        per_sample = diffusion_loss(predict([(draw, run)]), target)
        n = draw.n_subject
        out.append((per_sample[-n:] - per_sample[:n]) / per_sample[:n])
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pairs", nargs="+", metavar="CONCEPT_DIR RUN_DIR")
    ap.add_argument("--draws", type=int, default=30)
    args = ap.parse_args()
    if len(args.pairs) % 2:
        ap.error("give CONCEPT_DIR RUN_DIR pairs")
    torch.set_num_threads(1)
    backbone = None
    for concept_dir, run_dir in zip(args.pairs[::2], args.pairs[1::2]):
        saved = json.loads((Path(run_dir) / "config.json").read_text())
        config = InversionConfig.from_dict({**saved.get("config", saved), "contrast_weight": 1.0})
        backbone = backbone or load_training_backbone(None, config)
        run = InversionRun(load_concept(concept_dir), backbone, config, Path("/tmp/contrast_probe"),
                           alias=Path(run_dir).name)
        readings = {"initializer": relative_differences(run, args.draws)}
        trained = load_file(str(Path(run_dir) / "checkpoint.safetensors"))
        for key, rows in run.params.items():
            rows.data.copy_(trained[key])
        readings["trained"] = relative_differences(run, args.draws)
        print(Path(run_dir).name, "; ".join(f"{k}: mean {r.mean():.3f} median {r.median():.3f} under 0.02 "
                                            f"{(r < 0.02).float().mean():.2f}" for k, r in readings.items()))


if __name__ == "__main__":
    main()
