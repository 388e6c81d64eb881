"""Concept guidance: classifier-free guidance split into a subject term and a concept term.

    free = concept_free_prompts(prompts, tokens)        # the prompts without the learned concept tokens
    with concept_guidance(backbone, free, guidance_scale=3.0, concept_scale=6.0, floor=0.5):
        images = backbone.sample(prompts, latents, guidance_scale=3.0)   # the pipeline's own __call__

With p the prompt, p∖c the same prompt without the learned concept's tokens, s the guidance scale and s_c the
concept guidance scale, each denoising step uses

    ε̂ = ε(∅) + s · (ε(p∖c) − ε(∅)) + s_c · (ε(p) − ε(p∖c))

a sum of two guidance terms as in Composable Diffusion (Liu et al., ECCV 2022) and InstructPix2Pix's two scales
(Brooks et al., CVPR 2023, Eq. 3). At s_c = s it is the pipeline's classifier-free guidance ε(∅) + s·(ε(p) − ε(∅));
s_c > s pushes harder along what the concept tokens add, and leaves the guidance toward the rest of the prompt (the
subject) as it is. ε(∅) is the pipeline's unconditional (or negative-prompt) branch. It costs one more UNet pass on
the conditional half per step: 1.5× the UNet passes, 1.66× the sampling time on the toy model
(benchmarks/concept_guidance_cost.py).

How it hooks in (no copy of any pipeline's loop): a forward hook on the UNet sees each classifier-free guidance
call, whose batch is [unconditional; conditional] (every diffusers text-to-image pipeline orders it so). It runs
the UNet once more on the conditional half with the concept-free prompts' conditioning, and replaces the
conditional output ε(p) by ε(p∖c) + (s_c / s)·(ε(p) − ε(p∖c)); the pipeline's own guidance step
ε(∅) + s·(· − ε(∅)) then gives ε̂ exactly. A prompt without concept tokens is its own p∖c and is unchanged.

The concept floor f (`lego generate --concept-floor`, a model's `concept_floor`): at timesteps t < f·T the concept
term is 0, ε̂ = ε(∅) + s·(ε(p∖c) − ε(∅)), the prompt without the concept tokens; at t ≥ f·T as above. Why: a run
trained at a noise floor (`timestep_min`) never fitted its rows below it, and the late, low-noise steps paint the
texture and colour where an exemplar's appearance shows, while shape and pose are settled early (ProSpect, Zhang et
al. 2023; prompt editing's `[word::when]` in artists' tools). On the toy model, at its training floor 0.5, it gains
success and clean hits (docs/inversion_quality.md (al)). Below the floor a forward pre-hook swaps the conditional
half's conditioning for the concept-free one, so those steps cost no extra pass.
"""

from __future__ import annotations

import contextlib
import re

import torch

from .backbones.base import each_row_once
from .errors import UserError


def concept_free_prompts(prompts: list[str], tokens: list[str]) -> list[str]:
    """Each prompt with every one of `tokens` taken out and its spaces tidied ("a <melted> ball" -> "a ball")."""
    if not tokens:
        return list(prompts)
    pattern = re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))
    return [" ".join(pattern.sub(" ", p).split()) for p in prompts]


def check_scales(guidance_scale: float, concept_scale: float, where: str = "--concept-guidance-scale") -> None:
    """Concept guidance rescales the conditional branch of classifier-free guidance, so that branch must exist."""
    if not guidance_scale > 1:
        raise UserError(f"{where} acts through classifier-free guidance, which is off at guidance scale "
                        f"{guidance_scale:g}; pass --guidance-scale above 1 or leave {where} out")
    if not concept_scale >= 0:
        raise UserError(f"{where} must be >= 0, not {concept_scale:g}")


def _replace(kwargs: dict, free: dict, rows: slice) -> dict:
    """The UNet call's kwargs for its conditional half, with the concept-free conditioning in place of the prompt's.

    `free` is `Backbone.encode_text`'s flat dict: `encoder_hidden_states`, and on SDXL `text_embeds`, which the
    pipeline passes inside `added_cond_kwargs` (whose `time_ids` are kept, sliced to the half)."""
    def half(v):
        return v[rows] if isinstance(v, torch.Tensor) and v.ndim > 0 else v

    out = {k: ({kk: half(vv) for kk, vv in v.items()} if isinstance(v, dict) else half(v)) for k, v in kwargs.items()}
    for key, value in free.items():
        if key in out:
            out[key] = value.to(out[key].dtype)
        elif isinstance(out.get("added_cond_kwargs"), dict) and key in out["added_cond_kwargs"]:
            out["added_cond_kwargs"][key] = value.to(out["added_cond_kwargs"][key].dtype)
        else:
            raise RuntimeError(f"concept guidance: the pipeline's UNet call has no {key!r} to replace")
    return out


def _splice(args: tuple, kwargs: dict, free: dict, rows: slice) -> tuple[tuple, dict] | None:
    """The whole UNet call with its conditional half's conditioning replaced by the concept-free one, or None where
    the two do not line up (another sequence length)."""
    args, kwargs = list(args), dict(kwargs)
    if isinstance(kwargs.get("added_cond_kwargs"), dict):
        kwargs["added_cond_kwargs"] = dict(kwargs["added_cond_kwargs"])
    for key, value in free.items():
        if key == "encoder_hidden_states" and len(args) > 2:
            where, name = args, 2
        elif key in kwargs:
            where, name = kwargs, key
        elif isinstance(kwargs.get("added_cond_kwargs"), dict) and key in kwargs["added_cond_kwargs"]:
            where, name = kwargs["added_cond_kwargs"], key
        else:
            raise RuntimeError(f"concept guidance: the pipeline's UNet call has no {key!r} to replace")
        full = where[name]
        if full[rows].shape != value.shape:
            return None
        where[name] = torch.cat([full[:rows.start], value.to(full.dtype)])
    return tuple(args), kwargs


def check_floor(floor: float, where: str = "--concept-floor") -> None:
    if isinstance(floor, bool) or not 0.0 <= floor < 1.0:
        raise UserError(f"{where} is a fraction of the noise schedule in [0, 1) (0: the concept at every step), "
                        f"not {floor}")


@contextlib.contextmanager
def concept_guidance(backbone, free_prompts: list[str], guidance_scale: float, concept_scale: float,
                     floor: float = 0.0):
    """Inside the block, `backbone.sample(prompts, ...)` at `guidance_scale` guides the concept at `concept_scale`
    (module docstring); `free_prompts[i]` is prompt i without its concept tokens, in the order sampled. With
    `floor` f > 0 the concept term is 0 at timesteps below f · T (module docstring)."""
    check_scales(guidance_scale, concept_scale)
    check_floor(floor)
    with torch.no_grad(), each_row_once([slot.encoder for slot in backbone.slots]):
        free = backbone.encode_text(backbone.tokenize(free_prompts))
    ratio, batch = concept_scale / guidance_scale, len(free_prompts)
    below = floor * backbone.noise_scheduler.config.num_train_timesteps
    state = {"busy": False, "low": False, "swapped": False}

    def timestep_of(args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        if sample.shape[0] != 2 * batch:
            raise RuntimeError(f"concept guidance expects a classifier-free guidance batch of {2 * batch}, got "
                               f"{sample.shape[0]}")
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        if isinstance(timestep, torch.Tensor) and timestep.ndim > 0 and timestep.shape[0] == 2 * batch:
            timestep = timestep[batch:]
        return sample, timestep

    def before(module, args, kwargs):
        if state["busy"]:  # the extra pass of `after`
            return None
        _, timestep = timestep_of(args, kwargs)
        level = float(timestep.flatten()[0]) if isinstance(timestep, torch.Tensor) else float(timestep)
        state["low"], state["swapped"] = level < below, False
        if not state["low"]:
            return None
        spliced = _splice(args, kwargs, free, slice(batch, None))
        state["swapped"] = spliced is not None
        return spliced

    def after(module, args, kwargs, output):
        r = 0.0 if state["low"] else ratio
        if state["busy"] or state["swapped"] or r == 1:
            return None
        sample, timestep = timestep_of(args, kwargs)
        call = _replace({k: v for k, v in kwargs.items() if k not in ("sample", "timestep")}
                        | ({"encoder_hidden_states": args[2]} if len(args) > 2 else {}), free, slice(batch, None))
        state["busy"] = True
        try:
            eps_free = module(sample[batch:], timestep, **call)
        finally:
            state["busy"] = False
        eps_free = (eps_free[0] if isinstance(eps_free, tuple) else eps_free.sample).float()
        eps = output[0] if isinstance(output, tuple) else output.sample
        eps[batch:] = (eps_free + r * (eps[batch:].float() - eps_free)).to(eps.dtype)
        return output

    handles = [backbone.unet.register_forward_pre_hook(before, with_kwargs=True),
               backbone.unet.register_forward_hook(after, with_kwargs=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
