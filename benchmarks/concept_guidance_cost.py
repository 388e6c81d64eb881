"""Wall-clock cost of concept guidance (guidance.py) against plain guidance, as a ratio in one invocation.

    PYTHONPATH=src python3 benchmarks/concept_guidance_cost.py --concept runs/melted [--model M] [--images 8]
        [--steps 25] [--repeats 3] [--threads 2]

Generates the same prompts and seeds with `lego generate`'s code path (ConceptGenerator.generate) at the model's
guidance scale s, plainly and with `concept_guidance_scale` 2·s, each with no concept floor and with `concept_floor`
0.5 (the toy model's default), alternating the four `--repeats` times after one warm-up of each, and prints the
median seconds of each and their ratio to plain guidance.

Concept guidance adds one UNet call on the conditional half per step (3 passes instead of 2, in two calls), more than
1.5× the time because a call of half the batch costs more than half a call; below the floor the conditioning is
swapped and no pass is added. On the toy model on 2 CPU threads (8 images, 25 steps) plain guidance took 1.21 s,
concept guidance 1.66×, plain guidance with the floor 1.06× (encoding the concept-free prompts, and the hooks) and
concept guidance with the floor 1.35×. One call of the three halves together measured 65.6 ms per step against 88.2 ms
for the two calls (plain: 47.2 ms); it is not done, since it changes the concept-free pass by float rounding (up to
1.2e-6 in ε) and every figure of docs/inversion_quality.md (ai) was measured with two calls.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concept", required=True, help="a `lego invert` run folder")
    ap.add_argument("--model", default=None, help="default: the run's base model")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    from lego_inversion.generation import load_generator

    torch.set_num_threads(args.threads)
    gen = load_generator(args.model, [args.concept])
    scale = gen.backbone.default_guidance_scale
    prompts = ["a photo of a ball that is {concept}"] * args.images
    seeds = list(range(args.images))

    def timed(setting: tuple[float, float]) -> float:
        start = time.perf_counter()
        gen.generate(prompts, seeds, num_inference_steps=args.steps, batch_size=args.images, progress=False,
                     concept_guidance_scale=setting[0], concept_floor=setting[1])
        return time.perf_counter() - start

    settings = {"plain": (scale, 0.0), "concept guidance": (2 * scale, 0.0),  # at s itself: plain guidance
                "plain, floor 0.5": (scale, 0.5), "concept guidance, floor 0.5": (2 * scale, 0.5)}
    for value in settings.values():
        timed(value)  # warm-up
    times = {name: [] for name in settings}
    for _ in range(args.repeats):
        for name, value in settings.items():
            times[name].append(timed(value))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.images} images, {args.steps} steps, guidance {scale:g}, {args.threads} threads: "
          + ", ".join(f"{name} {t:.2f} s ({t / med['plain']:.2f}x)" for name, t in med.items()))


if __name__ == "__main__":
    main()
