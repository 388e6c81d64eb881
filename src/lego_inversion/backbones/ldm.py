"""BERT-style text side: the paper's LDM-256 (CompVis ldm-text2im-large-256) and the toy world model.

    backbone = LDMBackbone(LDMTextToImagePipeline.from_pretrained(path), model_id=path)

`LDMTextToImagePipeline` tokenizes with padding to 77 tokens and calls `bert(input_ids)[0]` without an
attention mask; training conditions the UNet the same way. Its autoencoder may be a `VQModel` (LDM-256) or an
`AutoencoderKL` (toy world), and its default guidance scale is 1.0 (no classifier-free guidance).
"""

from __future__ import annotations

import torch

from .base import Backbone, TextSlot

LDM_MAX_LENGTH = 77  # hard-coded in LDMTextToImagePipeline.__call__


class LDMBackbone(Backbone):
    kind = "ldm"
    default_guidance_scale = 1.0
    negative_prompts = False  # its __call__ guides against "" and swallows a negative_prompt in **kwargs

    def __init__(self, pipe, model_id: str):
        slot = TextSlot("bert", pipe.tokenizer, pipe.bert, LDM_MAX_LENGTH)
        super().__init__(pipe, [slot], model_id)

    @staticmethod
    def _vae(pipe):
        return pipe.vqvae

    def _encode(self, ids: list[torch.Tensor]) -> dict:
        return {"encoder_hidden_states": self.slots[0].encoder(ids[0])[0]}

    def pipeline_kwargs(self, height: int, width: int) -> dict:
        # The pipeline sizes its latents as height // 8 whatever the autoencoder's real factor: give it the
        # height that matches the latents we pass (the decoded image then has the autoencoder's true size).
        side = height // self.vae_scale_factor
        return {"height": side * 8, "width": (width // self.vae_scale_factor) * 8}
