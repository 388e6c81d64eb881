"""The real-size random builders (benchmarks on a GPU) reproduce the published architectures exactly.

Counted on the "meta" device, so nothing is allocated. The totals are those of the released checkpoints
(runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-xl-base-1.0): a wrong block type, head size or
transformer depth changes them.
"""

from __future__ import annotations

import pytest
import torch

from lego_inversion.testing import full_size_components

PUBLISHED = {
    "sd15": {"unet": 859_520_964, "text_encoder": 123_060_480, "vae": 83_653_863},
    "sdxl": {"unet": 2_567_463_684, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840,
             "vae": 83_653_863},
}


@pytest.mark.parametrize("family", sorted(PUBLISHED))
def test_full_size_parameter_counts_match_released_checkpoints(family):
    with torch.device("meta"):
        parts = full_size_components(family)
    counts = {name: sum(p.numel() for p in module.parameters())
              for name, module in parts.items() if isinstance(module, torch.nn.Module)}
    assert counts == PUBLISHED[family]
    assert parts["unet"].config.cross_attention_dim == (768 if family == "sd15" else 2048)


def test_full_size_rejects_unknown_family():
    with pytest.raises(ValueError, match="sd15"):
        full_size_components("sd3")
