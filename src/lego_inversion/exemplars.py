"""Exemplar images prepared once per run: the trainer's per-step work is only sampling from these tensors.

    exemplars = ExemplarSet.build(backbone, images, captions, resolution=512)
    latents, caption_idx, geometry = exemplars.sample(batch_size=2, choices=g_cpu, noise=g_device, flip_p=0.5)
    exemplars.ids[slot][caption_idx]       # token ids of each sample's caption

Each image is VAE-encoded once, both as is and horizontally flipped (the only augmentation), and the latent
distribution's mean and std are kept; a step draws `mean + std * ε` (what `latent_dist.sample()` would
give) without touching the VAE again. Captions are tokenized once, per text encoder, and stored once per
*distinct* caption: with the default templates every image of a set shares one caption, and the trainer
encodes it once per step instead of once per sample. Each image's original size and crop offset are kept too
(`geometry`), for SDXL's micro-conditioning.

Two generators drive a draw: `choices` (CPU: which images, which flips: small, and kept on the host so caption
bookkeeping needs no device sync) and `noise` (on the model's device: the latent-sampling noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .images import center_crop_resize, crop_geometry, load_image, to_tensor


@dataclass
class ExemplarSet:
    """One image set (I_C or I_C̄) as cached latents and token ids."""

    mean: torch.Tensor            # [N, 2, C, h, w]: index 1 on dim 1 is the flipped image
    std: torch.Tensor             # same shape; zeros for a VQ autoencoder
    ids: list[torch.Tensor]       # per text encoder: [U, L] for the U distinct captions
    caption_index: torch.Tensor   # [N] (CPU): image -> row of `ids`
    captions: list[str]           # per image
    geometry: torch.Tensor        # [N, 2, 4] (CPU): original height, width, crop top, left (index 1: flipped)

    @classmethod
    @torch.no_grad()
    def build(cls, backbone, images: list[Path], captions: list[str], resolution: int,
              chunk: int = 4) -> ExemplarSet:
        loaded = [load_image(p) for p in images]
        geometry = torch.tensor([[crop_geometry(*im.size, resolution, flipped) for flipped in (False, True)]
                                 for im in loaded], dtype=torch.float32)
        pixels = torch.stack([to_tensor(center_crop_resize(im, resolution)) for im in loaded])
        both = torch.stack([pixels, pixels.flip(-1)], dim=1).flatten(0, 1)  # [2N, 3, H, W]
        means, stds = [], []
        for start in range(0, both.shape[0], chunk):
            m, s = backbone.encode_images(both[start:start + chunk])
            means.append(m)
            stds.append(s)
        mean = torch.cat(means).unflatten(0, (len(images), 2))
        std = torch.cat(stds).unflatten(0, (len(images), 2))
        distinct = list(dict.fromkeys(captions))
        index = torch.tensor([distinct.index(c) for c in captions])
        return cls(mean=mean, std=std, ids=backbone.tokenize(distinct), caption_index=index, captions=list(captions),
                   geometry=geometry)

    def __len__(self) -> int:
        return self.mean.shape[0]

    def sample(self, batch_size: int, choices: torch.Generator, noise: torch.Generator,
               flip_p: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw `batch_size` images (with replacement), random flips, one latent sample each.

        Returns the latents (on the model's device), and per sample the row of its caption in `ids` and its
        geometry row (both on the CPU).
        """
        idx = torch.randint(len(self), (batch_size,), generator=choices)
        flip = (torch.rand(batch_size, generator=choices) < flip_p).long()
        eps = torch.randn((batch_size, *self.mean.shape[2:]), generator=noise, device=noise.device)
        idx_d, flip_d = idx.to(self.mean.device), flip.to(self.mean.device)
        latents = self.mean[idx_d, flip_d] + self.std[idx_d, flip_d] * eps.to(self.mean.device)
        return latents, self.caption_index[idx], self.geometry[idx, flip]
