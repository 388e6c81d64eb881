"""Helpers shared by the backbone tests: concept folders and frozen-weight snapshots."""

from __future__ import annotations

import torch

from concept_fixtures import CONCEPT_TOML, make_concept, snapshot  # noqa: F401  (re-exported for the tests)

FAST = {"steps": 2, "checkpoint_every": 2, "validation_steps": 1, "validation_images": 1}


def assert_only_new_rows_changed(before: dict, after: dict) -> None:
    assert before.keys() == after.keys() and len(before) > 50
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"frozen weights changed: {changed[:5]}"


def assert_each_prompt_encoded_once(backbone, monkeypatch, unconditional: bool = True, exact: bool = True) -> None:
    """`Backbone.sample` on 5 prompts (2 distinct) under guidance: each text encoder sees each distinct prompt once
    (with `unconditional`, the empty prompt of the unconditional branch too; SDXL's pipeline uses zeros there), and
    the images equal, pixel for pixel, those of the pipeline encoding every row (`each_row_once` a no-op); not
    `exact`: within 1/255, where a small matrix product rounds differently at another batch size (SDXL's pooled
    projection, 5e-7 on the tiny model)."""
    import contextlib

    import numpy as np

    from lego_inversion.backbones import base

    prompts = ["a photo of a cube"] * 3 + ["a photo of a ball"] * 2
    latents = torch.randn(backbone.latent_shape(len(prompts), backbone.resolution),
                          generator=torch.Generator().manual_seed(0))
    seen: list[int] = []
    hooks = [slot.ext.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))  # the ids embedded
             for slot in backbone.slots]
    try:
        once = [np.asarray(im) for im in backbone.sample(prompts, latents, num_inference_steps=2, guidance_scale=3.0)]
        rows_once, seen[:] = list(seen), []
        monkeypatch.setattr(base, "each_row_once", lambda encoders: contextlib.nullcontext())
        every = [np.asarray(im) for im in backbone.sample(prompts, latents, num_inference_steps=2, guidance_scale=3.0)]
    finally:
        for hook in hooks:
            hook.remove()
    branches = 1 + unconditional
    assert sum(rows_once) == (2 + unconditional) * len(backbone.slots)
    assert sum(seen) == branches * len(prompts) * len(backbone.slots)
    gap = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(once, every))
    assert gap == 0 if exact else gap <= 1
