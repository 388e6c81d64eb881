"""Attend-and-Excite (Chefer et al., SIGGRAPH 2023) on every backbone: the generation-time baseline of Lego §5.1-5.2.

    from lego_inversion.attend_excite import ExciteSettings, attend_and_excite, token_positions
    positions = [token_positions(backbone, "a photo of a ball that is melted", ["ball", "melted"])]
    with attend_and_excite(backbone, positions, ExciteSettings(), latents.shape):   # one prompt per image
        images = backbone.sample(prompts, latents)   # the pipeline's own __call__, latents updated inside its loop
    with record_cross_attention(backbone, batch=len(prompts), latent_shape=latents.shape) as store:
        backbone.sample(prompts, latents)            # store.maps: [B, heads, r*r, L] per layer per UNet call

The method (Chefer et al. 2023, §4 and Algorithm 1, one Attend-and-Excite step; defaults from the authors' code
and diffusers' StableDiffusionAttendAndExcitePipeline, which this module does not copy):
  A_t    = the conditional prompt's cross-attention probabilities at resolution r×r, averaged over the heads of
           every cross-attention layer at that resolution;  A_t[..., 1:-1] drops the start token and the last
           position and is renormalised: softmax(100 · A_t[..., 1:-1]) over the tokens;
  L      = max over the excited tokens s of  max(0, 1 − max_{ij} G(A_t^s)_{ij}),  G a 3×3 Gaussian smoothing
           (the reference code's kernel exp(−(d / 2σ)²), σ = 0.5, reflect padding): the loss;
  z_t'   = z_t − α_t ∇_{z_t} L,  α_t = scale_factor · sqrt(linspace(1.0, 0.5, T)[i]),  scale_factor 20: the update,
           applied during the first `max_step` (25 of 50) steps;
  at steps 0, 10, 20 (thresholds 0.05, 0.5, 0.8) the update is repeated while L > 1 − threshold, at most 20 times
  (iterative latent refinement), then the step's own update is applied.

How it hooks in (no copy of any pipeline's loop): `unet.set_attn_processor` wraps each cross-attention
processor of the chosen resolution in `_Recorder`, which leaves the layer's output to the original processor
and, while recording, also computes softmax(QKᵀ·scale) for the last `batch` rows (the conditional half under
classifier-free guidance). A UNet forward pre-hook runs at each denoising step before the pipeline's own UNet
call: it takes the latents z_t (the conditional half of the doubled CFG batch), runs the extra UNet passes with
gradients on the conditional prompt only, and returns the UNet input rebuilt from the updated z_t'. The
scheduler's `step` is wrapped so that the pipeline's own `latents` (still z_t) are replaced by z_t', and its
`scale_model_input` (SD/SDXL; LDMTextToImagePipeline never calls it) is wrapped to learn the input scale c of
x = c·z_t (1 for DDIM/PNDM, 1/sqrt(σ²+1) for Euler). Everything is restored on exit. Schedulers with one UNet
call per step are assumed (DDIM, PNDM, DDPM, Euler, LMS, DPM-Solver; not Heun).
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .errors import UserError

logger = logging.getLogger(__name__)
METHOD = "attend-excite"  # images.jsonl method of a plain prompt generated with Attend-and-Excite


@dataclass(frozen=True)
class ExciteSettings:
    """Attend-and-Excite's knobs; defaults are the authors' (RunConfig) and diffusers' pipeline defaults."""

    max_step: int = 25                      # excite during denoising steps 0..max_step-1 (max_iter_to_alter)
    thresholds: tuple[tuple[int, float], ...] = ((0, 0.05), (10, 0.5), (20, 0.8))  # step -> refine to L <= 1 - t
    max_refinement: int = 20                # iterations of one refinement (max_refinement_steps)
    scale_factor: float = 20.0              # α_t = scale_factor · sqrt(scale_range interpolated at step i)
    scale_range: tuple[float, float] = (1.0, 0.5)
    smooth: bool = True                     # Gaussian smoothing of each token's map before its maximum
    sigma: float = 0.5
    kernel_size: int = 3
    resolution: int | None = None           # attention map side; None: nearest to max(latent side / 4, 8)

    def __post_init__(self):
        object.__setattr__(self, "thresholds", tuple((int(s), float(t)) for s, t in dict(self.thresholds).items()))
        object.__setattr__(self, "scale_range", tuple(float(v) for v in self.scale_range))
        if self.max_step < 0 or self.max_refinement < 0:
            raise UserError("attend-and-excite: max step and max refinement must be >= 0")
        if any(s < 0 or not 0.0 <= t <= 1.0 for s, t in self.thresholds):
            raise UserError("attend-and-excite thresholds: give STEP:T with STEP >= 0 and 0 <= T <= 1")
        if len(self.scale_range) != 2 or self.scale_factor < 0:
            raise UserError("attend-and-excite: scale range needs two values and the scale factor must be >= 0")
        if self.sigma <= 0 or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise UserError("attend-and-excite: sigma must be > 0 and the kernel size an odd positive integer")
        if self.resolution is not None and self.resolution < 1:
            raise UserError(f"attend-and-excite resolution {self.resolution}: use a positive map side")

    def to_json(self) -> dict:
        row = asdict(self)
        row["thresholds"] = {str(s): t for s, t in self.thresholds}
        row["scale_range"] = list(self.scale_range)
        return row

    def step_sizes(self, num_steps: int) -> list[float]:
        """α_t of each step: scale_factor · sqrt(linspace(scale_range[0], scale_range[1], T))."""
        lo, hi = self.scale_range
        ramp = torch.linspace(lo, hi, num_steps, dtype=torch.float64) if num_steps > 1 else torch.tensor([lo])
        return [self.scale_factor * math.sqrt(v) for v in ramp.tolist()]


# -- the loss ------------------------------------------------------------------------------------------------
def gaussian_kernel(size: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """The reference code's 2-D kernel: product of exp(−((x − mean) / (2σ))²) per axis, normalised to sum 1."""
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-((x / (2 * sigma)) ** 2))
    kernel = g[:, None] * g[None, :]
    return kernel / kernel.sum()


def token_maxima(maps: torch.Tensor, positions: list[int], settings: ExciteSettings) -> torch.Tensor:
    """max_{ij} G(A^s)_{ij} per excited token position s; `maps` [h, w, L] = one image's averaged attention."""
    text = (maps[..., 1:-1].float() * 100).softmax(dim=-1)  # renormalised over tokens 1..L-2
    pad = settings.kernel_size // 2
    kernel = gaussian_kernel(settings.kernel_size, settings.sigma).to(text.device)
    out = []
    for p in positions:
        image = text[..., p - 1]
        if settings.smooth and pad:
            if min(image.shape) <= pad:
                raise UserError(f"attend-and-excite: {tuple(image.shape)} attention maps are too small for a "
                                f"{settings.kernel_size}x{settings.kernel_size} smoothing kernel; choose a larger "
                                "resolution or turn smoothing off")
            padded = F.pad(image[None, None], (pad, pad, pad, pad), mode="reflect")
            image = F.conv2d(padded, kernel[None, None])[0, 0]
        out.append(image.max())
    return torch.stack(out)


def excite_loss(maxima: torch.Tensor) -> torch.Tensor:
    """L = max_s max(0, 1 − maxima_s): the most neglected token decides (Chefer et al. §4)."""
    return (1 - maxima).clamp(min=0).max()


# -- token positions -----------------------------------------------------------------------------------------
def token_positions(backbone, prompt: str, words: list[str], where: str = "--attend-and-excite") -> list[int]:
    """Positions of every token of each word in `prompt` as the (first) text encoder sees it (start token = 0).

    Words are matched as token sequences of the backbone's first tokenizer (CLIP BPE, BERT word-pieces); SDXL's
    concatenated hidden states share the first encoder's sequence positions. Every occurrence is excited."""
    slot = backbone.slots[0]
    ids = slot.tokenizer(prompt, padding="max_length", max_length=slot.max_length, truncation=True).input_ids
    positions = []
    for word in words:
        piece = slot.tokenizer(word, add_special_tokens=False).input_ids
        hits = [i for i in range(1, len(ids) - len(piece)) if piece and ids[i:i + len(piece)] == piece]
        if not hits:
            raise UserError(f"{where} {word!r}: not a word of the prompt {prompt!r} (as the {slot.name} tokenizer "
                            "splits it); name words the prompt contains")
        for h in hits:
            positions += range(h, h + len(piece))
    return sorted(set(positions))


# -- recording cross-attention -------------------------------------------------------------------------------
class AttentionStore:
    """Cross-attention probabilities of the chosen layers, [batch, heads, h*w, L] per layer call."""

    def __init__(self, layers: dict[str, tuple[int, int]]):
        self.layers = layers    # processor name -> (h, w) of its maps
        self.maps: list[torch.Tensor] = []
        self.batch: int | None = None  # record the last `batch` rows (the conditional half); None: not recording

    def aggregate(self) -> torch.Tensor:
        """[B, h, w, L]: the mean over every recorded head of every layer (as the reference `aggregate_attention`)."""
        if not self.maps:
            raise RuntimeError("attend-and-excite: no cross-attention map was recorded")
        (h, w), = set(self.layers.values())
        stacked = torch.cat([m.float() for m in self.maps], dim=1)  # heads of all layers side by side
        return stacked.mean(dim=1).unflatten(1, (h, w))


def cross_attention_probs(attn, hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """softmax(Q Kᵀ · scale) of a diffusers `Attention` layer, [B, heads, queries, tokens] (what SDPA hides)."""
    if attn.norm_cross is not None:
        context = attn.norm_encoder_hidden_states(context)
    if hidden.ndim == 4:
        hidden = hidden.flatten(2).transpose(1, 2)
    query = attn.head_to_batch_dim(attn.to_q(hidden))
    key = attn.head_to_batch_dim(attn.to_k(context))
    probs = attn.get_attention_scores(query, key, None)
    return probs.unflatten(0, (hidden.shape[0], attn.heads))


class _Recorder:
    """Attention processor: the original processor computes the output; while the store records, the
    probabilities of the last `store.batch` rows are computed beside it and stored."""

    def __init__(self, inner, store: AttentionStore, name: str):
        self.inner, self.store, self.name = inner, store, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        if self.store.batch is not None and encoder_hidden_states is not None:
            rows = slice(hidden_states.shape[0] - self.store.batch, None)
            probs = cross_attention_probs(attn, hidden_states[rows], encoder_hidden_states[rows])
            h, w = self.store.layers[self.name]
            if probs.shape[2] != h * w:
                raise RuntimeError(f"{self.name}: {probs.shape[2]} queries, expected a {h}x{w} map")
            self.store.maps.append(probs)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)


def cross_attention_layers(unet, latent_hw: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """Processor name -> (h, w) of its maps, for every cross-attention layer of a UNet2DConditionModel: block k of
    the down path (and the mirrored up block, and the middle block at the last level) sees latents / 2^k."""
    from diffusers.models.attention_processor import Attention

    levels = len(unet.down_blocks)
    out = {}
    for name, module in unet.named_modules():
        if not (isinstance(module, Attention) and module.is_cross_attention):
            continue
        part, _, rest = name.partition(".")
        index = int(rest.split(".")[0]) if part in ("down_blocks", "up_blocks") else levels - 1
        level = levels - 1 - index if part == "up_blocks" else index
        out[f"{name}.processor"] = tuple(math.ceil(s / 2 ** level) for s in latent_hw)
    return out


def choose_layers(unet, latent_hw: tuple[int, int], resolution: int | None) -> dict[str, tuple[int, int]]:
    """The cross-attention layers whose maps are `resolution` high; None: the side nearest to max(h / 4, 8)
    (diffusers' default attn_res is image side / 32 = latent side / 4: 16 on SD 1.x at 512 px, 32 on SDXL; at
    least 8, because the toy model's 2×2 maps leave the smoothed maximum nothing to localise)."""
    layers = cross_attention_layers(unet, latent_hw)
    sides = sorted({hw[0] for hw in layers.values()})
    if not sides:
        raise UserError("attend-and-excite needs cross-attention layers; this UNet has none")
    if resolution is None:
        want = max(latent_hw[0] // 4, 8)
        resolution = min(sides, key=lambda s: (abs(s - want), -s))
    if resolution not in sides:
        raise UserError(f"attend-and-excite resolution {resolution}: this model's cross-attention maps are "
                        f"{', '.join(map(str, sides))} high at this image size; choose one of them")
    return {n: hw for n, hw in layers.items() if hw[0] == resolution}


@contextlib.contextmanager
def _recording_processors(unet, store: AttentionStore):
    """Wrap the chosen layers' processors; the originals (the same objects) are put back on exit."""
    original = unet.attn_processors
    unet.set_attn_processor({n: _Recorder(p, store, n) if n in store.layers else p for n, p in original.items()})
    try:
        yield store
    finally:
        unet.set_attn_processor(original)


@contextlib.contextmanager
def record_cross_attention(backbone, batch: int, latent_shape, resolution: int | None = None):
    """Record the conditional prompts' cross-attention maps of every UNet call made inside the block."""
    store = AttentionStore(choose_layers(backbone.unet, tuple(latent_shape[-2:]), resolution))
    with _recording_processors(backbone.unet, store):
        store.batch = batch
        yield store


# -- the latent update inside the pipeline's loop ------------------------------------------------------------
def _rows(value, rows, full: int):
    """`value` with the batch rows `rows` taken from every tensor whose first dimension is the batch `full`."""
    if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == full:
        return value[rows]
    if isinstance(value, dict):
        return {k: _rows(v, rows, full) for k, v in value.items()}
    return value


class _Exciter:
    """The UNet pre-hook and scheduler wrappers of one `backbone.sample` call (see the module docstring)."""

    def __init__(self, backbone, positions: list[list[int]], settings: ExciteSettings, store: AttentionStore):
        self.unet, self.scheduler = backbone.unet, backbone.pipe.scheduler
        self.original_step, self.original_scale = self.scheduler.step, self.scheduler.scale_model_input
        self.positions, self.settings, self.store = positions, settings, store
        self.batch = len(positions)
        self.step = 0
        self.inner = False       # our own UNet passes must not re-enter the hook
        self.scaled = None       # (input, output) of this step's scale_model_input
        self.pending = None      # z_t' that scheduler.step must continue from
        self.alphas: list[float] = []
        self.log: list[dict] = []  # per step: losses before the update (for tests and measurements)

    def scale_model_input(self, sample, *args, **kwargs):
        out = self.original_scale(sample, *args, **kwargs)
        self.scaled = (sample, out)
        return out

    def scheduler_step(self, model_output, timestep, sample, *args, **kwargs):
        if self.pending is not None:
            sample, self.pending = self.pending.to(sample.dtype), None
        return self.original_step(model_output, timestep, sample, *args, **kwargs)

    def pre_hook(self, module, args, kwargs):
        if self.inner:
            return None
        step, self.step = self.step, self.step + 1
        scaled, self.scaled = self.scaled, None
        if step >= self.settings.max_step:
            return None
        args, kwargs = list(args), dict(kwargs)
        sample = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        full, b = sample.shape[0], self.batch
        if full not in (b, 2 * b):
            raise RuntimeError(f"attend-and-excite: UNet batch {full} is neither {b} nor {2 * b}")
        cond = slice(full - b, None)  # the conditional half: every pipeline puts the negative prompt first
        latents = scaled[0] if scaled is not None and scaled[1] is sample else sample
        scale = 1.0
        if latents is not sample:  # x = c·z (Euler-type schedulers): learn c, check that it is one number
            z, x = latents[cond].float(), sample[cond].float()
            scale = float((x * z).sum() / (z * z).sum().clamp(min=1e-12))
            if not torch.allclose(x, scale * z, rtol=1e-3, atol=1e-5):
                raise UserError(f"attend-and-excite: scheduler {type(self.scheduler).__name__} scales the UNet "
                                "input non-uniformly; use a DDIM, PNDM or Euler-type scheduler")
        if not self.alphas:
            self.alphas = self.settings.step_sizes(len(self.scheduler.timesteps))
        extra = {k: _rows(v, cond, full) for k, v in kwargs.items() if k not in ("sample", "timestep")}
        z_new = self.excite(latents[cond], scale, _rows(timestep, cond, full), extra, step)
        self.pending = z_new
        x_new = (scale * z_new).to(sample.dtype)
        x_new = torch.cat([x_new, x_new]) if full == 2 * b else x_new
        if args:
            args[0] = x_new
        else:
            kwargs["sample"] = x_new
        return tuple(args), kwargs

    def loss_grad(self, z: torch.Tensor, rows: list[int], scale: float, timestep, extra: dict):
        """Per-image loss L and ∇_z L of images `rows` (latents z[rows]) from one UNet pass on their prompts."""
        z = z.detach().requires_grad_(True)
        picked = {k: _rows(v, rows, self.batch) for k, v in extra.items()}
        self.store.maps.clear()
        self.store.batch, self.inner = len(rows), True
        try:
            with torch.enable_grad():
                self.unet(scale * z, _rows(timestep, rows, self.batch), **picked)
                maps = self.store.aggregate()
                losses = torch.stack([excite_loss(token_maxima(maps[j], self.positions[r], self.settings))
                                      for j, r in enumerate(rows)])
                grad, = torch.autograd.grad(losses.sum(), z)
        finally:
            self.store.batch, self.inner = None, False
            self.store.maps.clear()
        return losses.detach(), grad  # images are independent, so ∇ of the sum is each image's own gradient

    def excite(self, z: torch.Tensor, scale: float, timestep, extra: dict, step: int) -> torch.Tensor:
        """z_t' for every image: refinement at a threshold step, then z_t − α_t ∇L (Chefer et al. Algorithm 1)."""
        alpha, everyone = self.alphas[min(step, len(self.alphas) - 1)], list(range(self.batch))
        z = z.detach().clone()
        losses, grad = self.loss_grad(z, everyone, scale, timestep, extra)
        entry = {"step": step, "loss": losses.tolist(), "refinements": 0, "input_scale": scale}
        threshold = dict(self.settings.thresholds).get(step)
        if threshold is not None and self.settings.max_refinement:
            target = max(0.0, 1.0 - threshold)
            active = [r for r in everyone if losses[r] > target]
            refined, cur_loss, cur_grad = list(active), losses[active], grad[active]
            while active:  # as the reference: compute L, update, go on while that L was above the target
                entry["refinements"] += 1
                z[active] = z[active] - alpha * cur_grad
                if entry["refinements"] >= self.settings.max_refinement:
                    logger.info("attend-and-excite: step %d: refinement stopped after %d iterations", step,
                                entry["refinements"])
                    break
                active = [r for r, lr in zip(active, cur_loss.tolist()) if lr > target]
                if active:
                    cur_loss, cur_grad = self.loss_grad(z[active], active, scale, timestep, extra)
            if refined:  # the step's own update starts from the refined latents
                new_loss, new_grad = self.loss_grad(z[refined], refined, scale, timestep, extra)
                losses[refined], grad[refined] = new_loss, new_grad
        entry["loss_after_refinement"] = losses.tolist()
        self.log.append(entry)
        return z - alpha * grad


@contextlib.contextmanager
def attend_and_excite(backbone, positions: list[list[int]], settings: ExciteSettings, latent_shape):
    """Inside the block, `backbone.sample` (one prompt per entry of `positions`) runs Attend-and-Excite; on exit
    the processors, the pre-hook and the scheduler's methods are back as they were. Yields the `_Exciter`."""
    store = AttentionStore(choose_layers(backbone.unet, tuple(latent_shape[-2:]), settings.resolution))
    exciter = _Exciter(backbone, positions, settings, store)
    scheduler = exciter.scheduler
    own = {n: vars(scheduler)[n] for n in ("step", "scale_model_input") if n in vars(scheduler)}
    with _recording_processors(backbone.unet, store):
        handle = backbone.unet.register_forward_pre_hook(exciter.pre_hook, with_kwargs=True)
        scheduler.step, scheduler.scale_model_input = exciter.scheduler_step, exciter.scale_model_input
        try:
            yield exciter
        finally:
            handle.remove()
            for name in ("step", "scale_model_input"):
                if name in own:
                    setattr(scheduler, name, own[name])
                else:
                    delattr(scheduler, name)
