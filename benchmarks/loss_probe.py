"""What the denoising loss (Eq. 1 of Lego) sees on a toy-world concept: the loss of several captions on the same
images with common random numbers (docs/inversion_quality.md, section (e)).

    PYTHONPATH=src python3 benchmarks/loss_probe.py --concepts examples/melted_cube examples/waving_ball \\
        --runs 'runs/levers/runs/def-{name}-ti-s0' --json runs/loss_probe.json
    PYTHONPATH=src python3 benchmarks/loss_probe.py --concepts examples/melted_cube --bands 0 250 500 750 1000

For each concept folder (with a [toyworld] table) and each image set (its with/ exemplars, and 4 fresh renders
of the look on each new target subject) it prints the mean loss of: the look's neutral description (the upper
bound), the subject alone, the concept's generic words, the `with` template with the initializer words and, when
`--runs` names a trained run folder ({name} = the concept folder's name), with the learned tokens. Every caption
sees the same `--draws` draws of (t, ε) per image, so differences between captions are not sampling noise of
(t, ε). `--bands` splits t into ranges and reports each (described vs subject only), to show at which noise
levels a look is visible to the loss.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TARGETS = ("ball", "star", "bear")
RENDER_APPEARANCES = ("red", "green", "blue", "yellow")


def latents_of(backbone, images) -> torch.Tensor:
    """PIL images (64x64) -> the scaled latent means the trainer uses."""
    pixels = torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 127.5 - 1)
                          .permute(2, 0, 1) for im in images])
    return backbone.encode_images(pixels)[0]


@torch.no_grad()
def mean_losses(backbone, latents: torch.Tensor, prompts: list[str], draws: int, low: int, high: int,
                seed: int = 0) -> list[float]:
    """Mean Eq. 1 loss of each prompt on `latents`, t ~ U[low, high), the same (t, ε) draws for every prompt."""
    from lego_inversion.losses import diffusion_loss, diffusion_target

    sched = backbone.noise_scheduler
    cond = backbone.encode_text(backbone.tokenize(prompts))
    g = torch.Generator().manual_seed(seed)
    totals = np.zeros(len(prompts))
    for _ in range(draws):
        t = torch.randint(low, high, (latents.shape[0],), generator=g)
        noise = torch.randn(latents.shape, generator=g)
        noisy = sched.add_noise(latents, noise, t)
        target = diffusion_target(sched, latents, noise, t)
        for j in range(len(prompts)):
            c = {k: v[j:j + 1].expand(latents.shape[0], *v.shape[1:]) for k, v in cond.items()}
            totals[j] += float(diffusion_loss(backbone.predict(noisy, t, c), target).mean())
    return (totals / draws).tolist()


def probe(folder: Path, run: Path | None, args) -> dict:
    from lego_inversion.generation import load_generator
    from lego_inversion.images import load_image
    from lego_inversion.toyworld.render import Scene, render
    from lego_inversion.toyworld.training_data import described_prompt, generic_prompt

    data = tomllib.loads((folder / "concept.toml").read_text())
    truth = data["toyworld"]
    subject, appearance, concept, count = truth["subject"], truth["appearance"], truth["concept"], truth["count"]
    gen = load_generator(None, [run] if run else [])
    backbone = gen.backbone
    template = data["prompts"]["with"]
    init_words = " ".join(c["init"] for c in data["concept"])
    sets = [("exemplars", subject, appearance,
             [load_image(p, size=64) for p in sorted((folder / "with").iterdir())])]
    sets += [(f"new subject: {t}", t, None, [render(Scene(t, a, concept, truth["variant"], count, seed=900 + i))
                                            for i, a in enumerate(RENDER_APPEARANCES)])
             for t in args.targets if t != subject]
    out = {}
    for where, subj, app, images in sets:
        prompts = {"described": described_prompt(subj, app, concept, truth["variant"]),
                   "subject only": generic_prompt(subj, app, "none"),
                   "generic words": generic_prompt(subj, app, concept, count),
                   "init words": template.replace("{subject}", subj).replace("{concept}", init_words)}
        if run:
            prompts["learned tokens"] = template.replace("{subject}", subj).replace(
                "{concept}", gen.expand_prompt("{concept}"))
        latents = latents_of(backbone, images)
        bands = list(zip(args.bands[:-1], args.bands[1:]))
        out[where] = {f"{lo}-{hi}": dict(zip(prompts, mean_losses(backbone, latents, list(prompts.values()),
                                                                  args.draws, lo, hi)))
                      for lo, hi in bands}
        for band, row in out[where].items():
            print(f"{folder.name} | {where} | t {band} | " + " ".join(f"{k} {v:.4f}" for k, v in row.items()),
                  flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", nargs="+", required=True, help="toy-world concept folders")
    ap.add_argument("--runs", default=None, help="run folder pattern with {name}, e.g. 'runs/x/def-{name}-ti-s0'")
    ap.add_argument("--draws", type=int, default=64, help="(t, ε) draws per image and band")
    ap.add_argument("--bands", nargs="+", type=int, default=[0, 1000], help="t band edges, e.g. 0 250 500 750 1000")
    ap.add_argument("--targets", nargs="+", default=list(TARGETS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="write all numbers here")
    args = ap.parse_args(argv)
    if len(args.bands) < 2 or sorted(args.bands) != args.bands or args.draws < 1:
        print("loss_probe: error: --bands needs increasing edges (at least two); --draws >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    results = {}
    for c in args.concepts:
        folder = Path(c)
        run = Path(args.runs.format(name=folder.name)) if args.runs else None
        if not (folder / "concept.toml").is_file() or (run is not None and not run.is_dir()):
            print(f"loss_probe: error: {folder} is not a concept folder or {run} is not a run folder", file=sys.stderr)
            return 2
        results[folder.name] = probe(folder, run, args)
    if args.json:
        from lego_inversion.atomic import atomic_write_json

        atomic_write_json(Path(args.json), {"command": "benchmarks/loss_probe.py " + " ".join(argv or sys.argv[1:]),
                                            "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
