"""Exemplar images prepared once per run: the trainer's per-step work is only sampling from these tensors.

    exemplars = ExemplarSet.build(backbone, images, captions, resolution=512)   # one caption per image
    exemplars = ExemplarSet.build(backbone, images, [[c1, c2, c3], ...], 512)   # K alternatives per image
    latents, caption_idx, geometry = exemplars.sample(batch_size=2, choices=g_cpu, noise=g_device, flip_p=0.5)
    exemplars.ids[slot][caption_idx]       # token ids of each sample's caption

Each image is VAE-encoded once, both as is and horizontally flipped, and the latent distribution's mean and std
are kept; with `hues` > 1 also at hues - 1 rotations of its hue, evenly spaced around the colour wheel
(`hue_variants`: a sample then takes one at random, so no learned token can carry the exemplar's colour). A draw
is `mean + std * ε` (what `latent_dist.sample()` would give), without touching the VAE again. Captions are
tokenized once, per text encoder, and stored once per
*distinct* caption: with the default templates every image of a set shares one caption, and the trainer
encodes it once per step instead of once per sample. An image may have K alternative captions (Textual
Inversion's template augmentation, `caption_variants`): each sample then takes one of them at random. Each
image's original size and crop offset are kept too (`geometry`), for SDXL's micro-conditioning.

Two generators drive a draw: `choices` (CPU: which images, flips and hues: small, and kept on the host so caption
bookkeeping needs no device sync) and `noise` (on the model's device: the latent-sampling noise).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import CAPTION_OPENINGS
from .images import center_crop_resize, crop_geometry, load_image, rotate_hue, to_tensor


@dataclass
class ExemplarSet:
    """One image set (I_C or I_C̄) as cached latents and token ids."""

    mean: torch.Tensor            # [N, 2·hues, C, h, w]: view 2·k + f is hue rotation k/hues, flipped if f
    std: torch.Tensor             # same shape; zeros for a VQ autoencoder
    ids: list[torch.Tensor]       # per text encoder: [U, L] for the U distinct captions
    caption_index: torch.Tensor   # [N, K] (CPU): image, alternative -> row of `ids`
    captions: list[list[str]]     # per image, its K alternative captions
    geometry: torch.Tensor        # [N, 2, 4] (CPU): original height, width, crop top, left (index 1: flipped)

    @classmethod
    @torch.no_grad()
    def build(cls, backbone, images: list[Path], captions: list[str] | list[list[str]], resolution: int,
              chunk: int = 4, hues: int = 1) -> ExemplarSet:
        loaded = [load_image(p) for p in images]
        geometry = torch.tensor([[crop_geometry(*im.size, resolution, flipped) for flipped in (False, True)]
                                 for im in loaded], dtype=torch.float32)
        crops = [center_crop_resize(im, resolution) for im in loaded]
        pixels = [to_tensor(rotate_hue(im, k / hues) if k else im) for im in crops for k in range(hues)]
        views = torch.stack([v for x in pixels for v in (x, x.flip(-1))])  # [N·2·hues, 3, H, W]
        means, stds = [], []
        for start in range(0, views.shape[0], chunk):
            m, s = backbone.encode_images(views[start:start + chunk])
            means.append(m)
            stds.append(s)
        mean = torch.cat(means).unflatten(0, (len(images), 2 * hues))
        std = torch.cat(stds).unflatten(0, (len(images), 2 * hues))
        options = [[c] if isinstance(c, str) else list(c) for c in captions]
        if len({len(o) for o in options}) != 1 or not options[0]:
            raise ValueError("every image needs the same number (>= 1) of alternative captions")
        distinct = list(dict.fromkeys(c for o in options for c in o))
        index = torch.tensor([[distinct.index(c) for c in o] for o in options])
        return cls(mean=mean, std=std, ids=backbone.tokenize(distinct), caption_index=index, captions=options,
                   geometry=geometry)

    def recaptioned(self, backbone, captions: list[list[str]]) -> ExemplarSet:
        """The same images (latents shared, not re-encoded) with other captions, alternative for alternative:
        `captions[i][k]` replaces `self.captions[i][k]`, so a caption row drawn by `sample` means the same image and
        alternative in both sets."""
        if [len(c) for c in captions] != [len(c) for c in self.captions]:
            raise ValueError("recaptioned: one caption per image and alternative, as in the set")
        distinct: dict[int, str] = {}
        for row, options in zip(self.caption_index.tolist(), captions):
            for r, caption in zip(row, options):
                if distinct.setdefault(r, caption) != caption:
                    raise ValueError("recaptioned: two captions for one caption row")
        ids = backbone.tokenize([distinct[r] for r in range(len(distinct))])
        return dataclasses.replace(self, ids=ids, captions=[list(c) for c in captions])

    def __len__(self) -> int:
        return self.mean.shape[0]

    def sample(self, batch_size: int, choices: torch.Generator, noise: torch.Generator,
               flip_p: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw `batch_size` images (with replacement), random flips (and hues), one latent sample each.

        Returns the latents (on the model's device), and per sample the row of its caption in `ids` and its
        geometry row (both on the CPU).
        """
        idx = torch.randint(len(self), (batch_size,), generator=choices)
        flip = (torch.rand(batch_size, generator=choices) < flip_p).long()
        k = self.caption_index.shape[1]  # one alternative: no extra draw, so the random stream is unchanged
        alt = torch.randint(k, (batch_size,), generator=choices) if k > 1 else torch.zeros(batch_size, dtype=torch.long)
        hues = self.mean.shape[1] // 2  # likewise: one hue, no draw
        hue = torch.randint(hues, (batch_size,), generator=choices) if hues > 1 else torch.zeros_like(flip)
        eps = torch.randn((batch_size, *self.mean.shape[2:]), generator=noise, device=noise.device)
        idx_d, view_d = idx.to(self.mean.device), (2 * hue + flip).to(self.mean.device)
        latents = self.mean[idx_d, view_d] + self.std[idx_d, view_d] * eps.to(self.mean.device)
        return latents, self.caption_index[idx, alt], self.geometry[idx, flip]


def caption_variants(caption: str, n: int) -> list[str]:
    """The caption and n-1 rewordings of its "a photo of" opening (Textual Inversion's template augmentation);
    a caption that does not open that way has no rewordings and is used as is."""
    if n <= 1 or not caption.startswith(CAPTION_OPENINGS[0] + " "):
        return [caption] * max(n, 1)
    rest = caption[len(CAPTION_OPENINGS[0]):]
    return [opening + rest for opening in CAPTION_OPENINGS[:n]]
