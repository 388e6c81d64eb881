"""Wall-clock gain of encoding each distinct prompt once when sampling (`backbones.base.each_row_once`), as a ratio
in one invocation.

    PYTHONPATH=src python3 benchmarks/prompt_dedup.py [--model M] [--subjects 3] [--images 4] [--steps 5]
        [--repeats 5] [--threads 1]

Draws what the look judge draws (selection.LookSelector: `--images` images of "a photo of a <subject> that is
melted" on each of `--subjects` subjects, `--steps` sampler steps, the model's guidance scale, concept guidance at
ratio 2 and the toy model's concept floor 0.5), once with `Backbone.sample` as it is and once with each_row_once
made a no-op (the pipeline encodes every row, the unconditional branch's empty prompt once per image), alternating
`--repeats` times after one warm-up of each; prints the median seconds of each, their ratio, and whether the images
are identical.

On the toy model (2-core AMD EPYC, one thread; the look judge's 12 images from 3 prompts, 5 steps), see
docs/throughput.md: its MiniLM text encoder reads 77 padded tokens per prompt, which costs as much as several
steps of its small UNet.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SUBJECTS = ("ball", "star", "bear", "cube", "pyramid", "heart")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: the bundled toy model")
    ap.add_argument("--subjects", type=int, default=3)
    ap.add_argument("--images", type=int, default=4, help="images per subject")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import numpy as np
    import torch

    from lego_inversion import guidance
    from lego_inversion.backbones import base, load_backbone
    from lego_inversion.guidance import concept_free_prompts, concept_guidance

    torch.set_num_threads(args.threads)
    backbone = load_backbone(args.model)
    prompts = [f"a photo of a {s} that is melted" for s in SUBJECTS[:args.subjects] for _ in range(args.images)]
    free = concept_free_prompts(prompts, ["that is melted"])
    latents = torch.randn(backbone.latent_shape(len(prompts), backbone.resolution),
                          generator=torch.Generator().manual_seed(0))
    scale = backbone.default_guidance_scale
    once = base.each_row_once

    def draw(dedup: bool):
        """Seconds and images of one draw; without `dedup`, each_row_once is a no-op where sampling and concept
        guidance call it."""
        for module in (base, guidance):
            module.each_row_once = once if dedup else (lambda encoders: contextlib.nullcontext())
        try:
            start = time.perf_counter()
            with concept_guidance(backbone, free, scale, 2 * scale, 0.5):
                images = backbone.sample(prompts, latents, num_inference_steps=args.steps, guidance_scale=scale)
            return time.perf_counter() - start, [np.asarray(im) for im in images]
        finally:
            for module in (base, guidance):
                module.each_row_once = once

    times: dict[bool, list[float]] = {True: [], False: []}
    images = {}
    for i in range(args.repeats + 1):
        for dedup in (False, True):
            seconds, images[dedup] = draw(dedup)
            if i:  # the first round warms up
                times[dedup].append(seconds)
    every, distinct = statistics.median(times[False]), statistics.median(times[True])
    same = all(np.array_equal(a, b) for a, b in zip(images[False], images[True]))
    print(f"{len(prompts)} images, {args.subjects} prompts, {args.steps} steps, {args.threads} thread(s): every row "
          f"encoded {every:.3f} s, each distinct prompt once {distinct:.3f} s, ratio {every / distinct:.2f}x; "
          f"images identical: {same}")


if __name__ == "__main__":
    main()
