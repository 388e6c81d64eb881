"""Stable Diffusion 1.x / 2.x (one CLIP tokenizer + text encoder; ε- or v-prediction from the scheduler).

    backbone = StableDiffusionBackbone(StableDiffusionPipeline.from_pretrained(path), model_id=path)
"""

from __future__ import annotations

import torch

from .base import Backbone, TextSlot


class StableDiffusionBackbone(Backbone):
    kind = "sd"
    default_guidance_scale = 7.5

    def __init__(self, pipe, model_id: str):
        slot = TextSlot("text_encoder", pipe.tokenizer, pipe.text_encoder, pipe.tokenizer.model_max_length)
        super().__init__(pipe, [slot], model_id)

    def _encode(self, ids: list[torch.Tensor]) -> dict:
        # As StableDiffusionPipeline.encode_prompt (clip_skip=None): last hidden state, mask only if configured.
        encoder = self.slots[0].encoder
        mask = None
        if getattr(encoder.config, "use_attention_mask", False):
            mask = (ids[0] != self.slots[0].tokenizer.pad_token_id).long()
        return {"encoder_hidden_states": encoder(ids[0], attention_mask=mask)[0]}
