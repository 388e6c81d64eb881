"""Stable Diffusion XL: two CLIP text encoders, a pooled embedding and size/crop micro-conditioning.

    backbone = StableDiffusionXLBackbone(StableDiffusionXLPipeline.from_pretrained(path), model_id=path)
    backbone.add_tokens(["<subj>", "<melted>"], ["cube", "melted"])   # one row in *each* encoder
    cond = backbone.encode_text(backbone.tokenize(prompts))            # flat dict, see `_encode`

Every new token (Lego's <subj> of §4.3 and each concept token <cpt_i> of §4.5) gets a row in both input-embedding
tables, `text_encoder` (CLIP ViT-L, "clip_l") and `text_encoder_2` (OpenCLIP bigG, "clip_g"); both rows are
learned. The Context Loss (Eq. 2 of Lego, §4.4) is computed in each embedding space separately and weighted
0.5 / 0.5, so the total is the *mean* over the two spaces and λ of Eq. 3 keeps the scale it has on one-encoder
backbones (SD 1.x/2.x, LDM).

Conditioning is computed exactly as `StableDiffusionXLPipeline.encode_prompt` (clip_skip=None) does:
penultimate hidden states of both encoders concatenated on the feature axis, the pooled `text_embeds` of
`text_encoder_2`, and `time_ids` = (original_size, crop top-left, target_size) = ((H, W), (0, 0), (H, W)) for
the image size H×W being denoised: what the pipeline uses by default at generation, and what the trainer's
centre-cropped, resized exemplars are.

Legacy CLIP configs (`eos_token_id == 2`, which the SDXL checkpoints ship) make transformers pool the hidden
state at `argmax(input_ids)`: with new tokens (ids above the end-of-text id) that is the new token, not EOS.
The adapter points pooling at the tokenizer's real end-of-text id, which gives identical results for prompts
without new tokens (the first EOS is the argmax there) and the correct position with them, in training and in
the pipeline's own generation alike.
"""

from __future__ import annotations

import torch

from ..errors import UserError
from .base import Backbone, TextSlot

SDXL_CONTEXT_WEIGHTS = (0.5, 0.5)  # Context Loss weight of the clip_l and clip_g embedding spaces


def fix_eos_pooling(encoder: torch.nn.Module, tokenizer) -> bool:
    """Make a CLIP text model pool at the first end-of-text token; returns True if it had to be changed."""
    text_model = getattr(encoder, "text_model", None)
    eos = getattr(tokenizer, "eos_token_id", None)
    if text_model is None or eos is None or getattr(text_model, "eos_token_id", eos) == eos:
        return False
    text_model.eos_token_id = eos
    return True


class StableDiffusionXLBackbone(Backbone):
    kind = "sdxl"
    default_guidance_scale = 5.0  # StableDiffusionXLPipeline's default

    def __init__(self, pipe, model_id: str):
        if pipe.text_encoder is None or pipe.text_encoder_2 is None:
            raise UserError(f"{model_id}: this SDXL pipeline lacks text_encoder or text_encoder_2; Lego needs both "
                            "(use the SDXL base model, not a refiner-only checkpoint)")
        w_l, w_g = SDXL_CONTEXT_WEIGHTS
        slots = [TextSlot("text_encoder", pipe.tokenizer, pipe.text_encoder, pipe.tokenizer.model_max_length, w_l),
                 TextSlot("text_encoder_2", pipe.tokenizer_2, pipe.text_encoder_2, pipe.tokenizer_2.model_max_length,
                          w_g)]
        for slot in slots:
            fix_eos_pooling(slot.encoder, slot.tokenizer)
        super().__init__(pipe, slots, model_id)

    def _encode(self, ids: list[torch.Tensor]) -> dict:
        """Flat conditioning {encoder_hidden_states [B, L, d_l + d_g], text_embeds [B, p]}.

        Kept flat (no nested `added_cond_kwargs`) so the trainer can concatenate batches key by key; `predict`
        builds the UNet's `added_cond_kwargs` from it.
        """
        hidden = []
        pooled = None
        for slot, slot_ids in zip(self.slots, ids):
            out = slot.encoder(slot_ids, output_hidden_states=True)
            if slot.name == "text_encoder_2":
                pooled = out.text_embeds
            hidden.append(out.hidden_states[-2])
        return {"encoder_hidden_states": torch.cat(hidden, dim=-1), "text_embeds": pooled}

    def time_ids(self, height: int, width: int, batch: int, geometry: torch.Tensor | None = None) -> torch.Tensor:
        """SDXL micro-conditioning, one row per sample: original_size + crops_coords_top_left + target_size.

        `geometry` [B, 4] holds each exemplar's (original height, width, crop top, left), as diffusers' SDXL
        training examples record them; without it (generation) the image is its own original, uncropped.
        """
        target = torch.tensor([[height, width]], dtype=torch.float32).repeat(batch, 1)
        if geometry is None:
            geometry = torch.tensor([[height, width, 0, 0]], dtype=torch.float32).repeat(batch, 1)
        return torch.cat([geometry.float(), target], dim=1).to(self.device, self.dtype)

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict,
                geometry: torch.Tensor | None = None) -> torch.Tensor:
        height, width = (s * self.vae_scale_factor for s in noisy.shape[-2:])
        dtype = self.unet.dtype
        added = {"text_embeds": cond["text_embeds"].to(dtype),
                 "time_ids": self.time_ids(height, width, noisy.shape[0], geometry)}
        hidden = cond["encoder_hidden_states"].to(dtype)
        return self.train_unet(noisy.to(dtype), timesteps, encoder_hidden_states=hidden,
                               added_cond_kwargs=added).sample

    def pipeline_kwargs(self, height: int, width: int) -> dict:
        return {"height": height, "width": width, "original_size": (height, width), "target_size": (height, width),
                "crops_coords_top_left": (0, 0)}

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As the base, but in fp32 when the VAE asks for it (`force_upcast`: the SDXL VAE overflows in fp16)."""
        if self.vae.dtype != torch.float16 or not getattr(self.vae.config, "force_upcast", False):
            return super().encode_images(pixels)
        self.vae.to(torch.float32)
        try:
            return super().encode_images(pixels)
        finally:
            self.vae.to(torch.float16)
