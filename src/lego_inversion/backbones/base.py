"""The backbone adapter: everything the trainer and generator need from a text-to-image pipeline.

    backbone = load_backbone("runwayml/stable-diffusion-v1-5")   # or a local folder, or None = toy model
    ids = backbone.add_tokens(["<subj>", "<melted>"], ["cube", "melted"])   # rows in every text encoder
    cond = backbone.encode_text(backbone.tokenize(prompts))                # what the UNet is conditioned on
    pred = backbone.predict(noisy_latents, timesteps, cond)
    images = backbone.sample(prompts, latents, num_inference_steps=50, guidance_scale=7.5)

A backbone has one or more `TextSlot`s (SD 1.x/2.x and LDM: one; SDXL: two) and one denoiser. Subclasses
describe how the pipeline encodes text (exactly as its own `encode_prompt` does, so training and generation see
the same conditioning) and how it is called; the trainer never branches on the backbone kind.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler

from ..errors import UserError
from .tokens import TokenExtension


@dataclass
class TextSlot:
    """One tokenizer + text encoder pair and its extension rows."""

    name: str
    tokenizer: object
    encoder: torch.nn.Module
    max_length: int
    context_weight: float = 1.0  # weight of this embedding space in the Context Loss (SDXL has two)

    @property
    def ext(self) -> TokenExtension:
        return TokenExtension.install(self.encoder)

    @property
    def base_table(self) -> torch.Tensor:
        """The frozen original input-embedding matrix [V, d]."""
        return self.ext.base.weight

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        return self.tokenizer(prompts, padding="max_length", max_length=self.max_length, truncation=True,
                              return_tensors="pt").input_ids

    def token_id(self, token: str) -> int:
        return self.tokenizer.convert_tokens_to_ids(token)

    def in_vocab(self, token: str) -> bool:
        return token in self.tokenizer.get_vocab()

    def init_vector(self, words: str) -> torch.Tensor:
        """Initial value of a new token: the mean input embedding of its init word(s)."""
        from .tokens import words_to_rows

        try:
            return words_to_rows([words], self.tokenizer, self.base_table)[0]
        except ValueError as exc:
            raise UserError(f"{self.name}: {exc}; choose another init word") from None


def _gather(value, inverse: torch.Tensor, rows: int):
    """`value` (a tensor, or a tuple / model output of them) with its leading dimension of `rows` indexed by
    `inverse`."""
    if isinstance(value, torch.Tensor):
        return value[inverse] if value.ndim and value.shape[0] == rows else value
    if isinstance(value, dict):  # transformers' ModelOutput
        return type(value)(**{k: _gather(v, inverse, rows) for k, v in value.items()})
    if isinstance(value, tuple):
        return type(value)(_gather(v, inverse, rows) for v in value)
    return value


@contextlib.contextmanager
def each_row_once(encoders: list[torch.nn.Module]):
    """Inside the block each text encoder encodes every distinct row of its input ids (and attention mask) once and
    hands each row of the batch its row's encoding. Why: a pipeline's batch repeats prompts (several images of one
    prompt, the unconditional branch's empty prompt once per image), and with a sequence's encoding independent of
    the other sequences in the batch the outputs are the same (bit for bit on the toy model; tests/backbones) at a
    fraction of the cost: the toy model's look judge draws 1.58x as fast (docs/throughput.md)."""
    def once(forward):
        def wrapped(*args, **kwargs):
            ids = args[0] if args else kwargs.get("input_ids")
            mask = kwargs.get("attention_mask")
            if len(args) > 1 or not isinstance(ids, torch.Tensor) or ids.ndim != 2 or \
                    not (mask is None or (isinstance(mask, torch.Tensor) and mask.shape == ids.shape)):
                return forward(*args, **kwargs)
            key = ids if mask is None else torch.cat([ids, mask.to(ids.dtype)], 1)
            distinct, inverse = torch.unique(key, dim=0, return_inverse=True)
            rows = ids.shape[0]
            if distinct.shape[0] == rows:
                return forward(*args, **kwargs)
            first = torch.full((distinct.shape[0],), rows, device=ids.device).scatter_reduce(
                0, inverse, torch.arange(rows, device=ids.device), "amin")
            kwargs = {k: v[first] if k in ("input_ids", "attention_mask") and v is not None else v
                      for k, v in kwargs.items()}
            out = forward(*((ids[first],) if args else ()), **kwargs)
            return _gather(out, inverse, distinct.shape[0])
        return wrapped

    saved = [(m, m.__dict__.get("forward")) for m in encoders]
    for module in encoders:
        module.forward = once(module.forward)
    try:
        yield
    finally:
        for module, own in saved:
            if own is None:
                del module.forward
            else:
                module.forward = own


class Backbone:
    """A frozen text-to-image model prepared for inversion. Subclasses set `kind` and override the hooks."""

    kind = "base"
    default_guidance_scale = 7.5
    default_concept_guidance_scale: float | None = None  # guidance.py; None: plain classifier-free guidance
    default_concept_floor = 0.0  # guidance.py: the concept tokens at every step
    negative_prompts = True  # the pipeline's __call__ takes negative_prompt
    # AdamW learning rate for the new rows when the config leaves it None: 5e-3 is the common Textual-Inversion
    # setting for CLIP text encoders; a model folder's lego_inversion.json can override it (the toy model's
    # 1e-2 was chosen by the toy-world sweep, docs/toyworld_benchmark.md)
    default_learning_rate = 5e-3
    # InversionConfig fields a model folder's lego_inversion.json sets (config.MODEL_DEFAULTS otherwise)
    inversion_defaults: dict = {}

    def __init__(self, pipe, slots: list[TextSlot], model_id: str):
        self.pipe = pipe
        self.slots = slots
        self.model_id = model_id
        self.unet = pipe.unet
        self.vae = self._vae(pipe)
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self._train_unet = None
        for module in [self.unet, self.vae, *(s.encoder for s in slots)]:
            if module is not None:
                module.requires_grad_(False)
                module.eval()
        for slot in slots:
            TokenExtension.install(slot.encoder)

    # -- hooks ---------------------------------------------------------------------------------------------
    @staticmethod
    def _vae(pipe):
        return getattr(pipe, "vae", None)

    def _encode(self, ids: list[torch.Tensor]) -> dict:
        """Token ids (one tensor per slot) -> UNet conditioning kwargs, as the pipeline's own encoder does."""
        raise NotImplementedError

    def pipeline_kwargs(self, height: int, width: int) -> dict:
        return {"height": height, "width": width}

    # -- shared ----------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        """Native image size in pixels."""
        size = self.unet.config.sample_size
        return (size[0] if isinstance(size, (list, tuple)) else size) * self.vae_scale_factor

    def to(self, device) -> Backbone:
        self.pipe.to(device)
        return self

    def check_new_tokens(self, tokens: list[str]) -> None:
        for slot in self.slots:
            for token in tokens:
                if slot.in_vocab(token):
                    raise UserError(f"token {token!r} already exists in the {slot.name} vocabulary of "
                                    f"{self.model_id}; rename it in concept.toml (e.g. \"<my-{token.strip('<>')}>\")")

    def add_tokens(self, tokens: list[str], init: list[str] | list[list[torch.Tensor]]) -> None:
        """Add new tokens to every slot. `init`: init words, or one vector per slot per token."""
        self.check_new_tokens(tokens)
        for s, slot in enumerate(self.slots):
            vectors = [slot.init_vector(w) if isinstance(w, str) else w[s] for w in init]
            added = slot.tokenizer.add_tokens(list(tokens), special_tokens=False)
            if added != len(tokens):
                raise UserError(f"{slot.name}: could not add tokens {tokens}")
            ids = slot.ext.add(torch.stack(vectors)) if vectors else []
            expected = [slot.token_id(t) for t in tokens]
            if ids != expected:
                raise RuntimeError(f"{slot.name}: tokenizer ids {expected} do not match embedding rows {ids}")

    def token_ids(self, tokens: list[str]) -> list[list[int]]:
        """Per slot, the ids of `tokens`."""
        return [[slot.token_id(t) for t in tokens] for slot in self.slots]

    def token_vectors(self, tokens: list[str]) -> dict[str, list[torch.Tensor]]:
        """token -> one vector per slot (detached fp32 copies)."""
        per_slot = [slot.ext.rows(ids).detach().float().cpu() for slot, ids in zip(self.slots, self.token_ids(tokens))]
        return {t: [rows[i] for rows in per_slot] for i, t in enumerate(tokens)}

    def encode_text(self, ids: list[torch.Tensor], frozen_ids: list[list[int]] | None = None) -> dict:
        """Conditioning for token ids (one tensor per slot); new tokens in `frozen_ids` get no gradient."""
        with contextlib.ExitStack() as stack:
            for slot, frozen in zip(self.slots, frozen_ids or []):
                if frozen:
                    stack.enter_context(slot.ext.frozen(frozen))
            return self._encode(ids)

    def tokenize(self, prompts: list[str]) -> list[torch.Tensor]:
        return [slot.tokenize(prompts).to(self.device) for slot in self.slots]

    def prompt_token_ids(self, prompt: str) -> list[int]:
        """Ids of the first slot's tokens in `prompt` (no special tokens): used to validate prompts."""
        return self.slots[0].tokenizer(prompt, add_special_tokens=False).input_ids

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels [-1, 1] -> (mean, std) of the scaled latent distribution; std is 0 for a VQ autoencoder.

        Called once per run: the trainer samples `mean + std * ε` each step instead of re-running the encoder.
        """
        config = self.vae.config
        scale = getattr(config, "scaling_factor", 1.0) or 1.0
        shift = getattr(config, "shift_factor", None) or 0.0
        out = self.vae.encode(pixels.to(self.device, self.vae.dtype))
        if hasattr(out, "latent_dist"):
            mean, std = out.latent_dist.mean, out.latent_dist.std
        else:  # VQModel: deterministic latents
            mean = out.latents
            std = torch.zeros_like(mean)
        return ((mean - shift) * scale).float(), (std * scale).float()

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict,
                geometry: torch.Tensor | None = None) -> torch.Tensor:
        """The denoiser's output for a training batch. `geometry` [B, 4] (original size, crop offset of each
        exemplar) is used by backbones with micro-conditioning (SDXL) and ignored by the others."""
        if self._train_unet is not None:  # a new training step: CUDA-graph outputs of the last one may be reused
            torch.compiler.cudagraph_mark_step_begin()
        return self.train_unet(noisy.to(self.unet.dtype), timesteps, **cond).sample

    @property
    def train_unet(self):
        """The UNet as training calls it: `torch.compile`d after `prepare_training(compile=True)`."""
        return self.unet if self._train_unet is None else self._train_unet  # no `or`: a compiled UNet has no bool

    def prepare_training(self, compile: bool = False) -> None:
        """GPU training setup, once per process: channels-last UNet (faster convolutions with tensor cores) and,
        if asked, a compiled copy of its forward for training (sampling keeps the eager module).

        The copy is compiled with CUDA graphs (mode "reduce-overhead"): at the paper's batch of 4 an eager SD 1.5
        step is bound by kernel launches, not arithmetic, and graph replay removed that (docs/throughput.md:
        34 -> 94 samples/s on an H100, after ~2 min of compilation)."""
        if self.device.type != "cuda":
            return
        self.unet.to(memory_format=torch.channels_last)
        if compile and self._train_unet is None:
            self._train_unet = torch.compile(self.unet, mode="reduce-overhead")

    def latent_shape(self, batch: int, resolution: int) -> tuple[int, int, int, int]:
        side = resolution // self.vae_scale_factor
        return (batch, self.unet.config.in_channels, side, side)

    @torch.no_grad()
    def sample(self, prompts: list[str], latents: torch.Tensor, num_inference_steps: int = 50,
               guidance_scale: float | None = None, negative_prompt: str | None = None):
        """Generate with the pipeline's own `__call__` from given initial latents -> list of PIL images."""
        if negative_prompt is not None and not self.negative_prompts:
            raise UserError(f"--negative-prompt: the {self.kind} pipeline ({type(self.pipe).__name__}) guides "
                            "against the empty prompt only and would ignore it; leave --negative-prompt out")
        guidance = self.default_guidance_scale if guidance_scale is None else guidance_scale
        if negative_prompt is not None and guidance <= 1:
            raise UserError(f"--negative-prompt acts through classifier-free guidance, which is off at guidance scale "
                            f"{guidance:g}; pass --guidance-scale above 1 or leave --negative-prompt out")
        scale = self.vae_scale_factor
        kwargs = self.pipeline_kwargs(latents.shape[-2] * scale, latents.shape[-1] * scale)
        if negative_prompt is not None:
            kwargs["negative_prompt"] = [negative_prompt] * len(prompts)
        with each_row_once([slot.encoder for slot in self.slots]):
            out = self.pipe(prompt=list(prompts), latents=latents.to(self.device, self.dtype),
                            num_inference_steps=num_inference_steps, guidance_scale=guidance, output_type="pil",
                            **kwargs)
        return out.images
