"""Lego's two losses: the inversion loss (Eq. 1) and the Context Loss (Eq. 2); Eq. 3 combines them.

    from lego_inversion.losses import context_loss, diffusion_target, diffusion_loss
    l_ctx = context_loss(concept_embeds, positives, negatives, temperature=0.07)     # Eq. 2 (cosine / τ)
    l_ctx = context_loss(concept_embeds, positives, negatives, similarity="dot")     # Eq. 2 as printed
    p = timestep_probabilities(1000, skew=0.5)   # ReVersion's importance sampling of t
    w = min_snr_weights(scheduler, gamma=5.0)     # Min-SNR-γ loss weight per t
    target = diffusion_target(scheduler, latents, noise, timesteps)                  # ε, v or x0
    l_inv = diffusion_loss(prediction, target)                                       # Eq. 1, per sample
    l_con = contrast_loss(l_neg, l_pos, margin=0.1)  # without/ images: concept caption vs subject caption

Positive and negative *words* reach `context_loss` as embedding rows: `backbones.tokens.words_to_rows`.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def context_loss(
    concept_embeds: torch.Tensor,
    positives: list[torch.Tensor],
    negatives: list[torch.Tensor],
    temperature: float = 0.07,
    similarity: str = "cosine",
) -> torch.Tensor:
    """Multi-positive InfoNCE of Eq. 2 (Lego §4.4), summed over the n concept tokens.

        L = -Σ_i log( Σ_k exp(s(c_i, P_ik)/τ) / (Σ_k exp(s(c_i, P_ik)/τ) + Σ_k exp(s(c_i, N_ik)/τ)) )

    with s the cosine similarity divided by τ (`similarity="cosine"`, ReVersion's form), or the plain dot
    product c · P as Eq. 2 is printed (`similarity="dot"`, τ unused). `concept_embeds` is [n, d]; `positives[i]`
    is [p_i, d] and `negatives[i]` is [q_i, d]. Computed with logsumexp, so it is exact and stable even for tiny
    τ. Returns a scalar.
    """
    if similarity not in ("cosine", "dot"):
        raise ValueError(f"similarity must be 'cosine' or 'dot', not {similarity!r}")
    if concept_embeds.dim() != 2:
        raise ValueError(f"concept_embeds must be [n, d], got shape {tuple(concept_embeds.shape)}")
    n = concept_embeds.shape[0]
    if len(positives) != n or len(negatives) != n:
        raise ValueError(f"need one positive and one negative set per concept token ({n}), got "
                         f"{len(positives)} and {len(negatives)}")
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    total = concept_embeds.new_zeros(())
    for c, pos, neg in zip(concept_embeds, positives, negatives):
        if pos.shape[0] == 0 or neg.shape[0] == 0:
            raise ValueError("every concept token needs at least one positive and one negative embedding")
        if similarity == "dot":
            pos_logits, neg_logits = pos.float() @ c.float(), neg.float() @ c.float()
        else:
            c = F.normalize(c.float(), dim=-1)
            pos_logits = F.normalize(pos.float(), dim=-1) @ c / temperature
            neg_logits = F.normalize(neg.float(), dim=-1) @ c / temperature
        log_num = torch.logsumexp(pos_logits, dim=0)
        log_den = torch.logsumexp(torch.cat([pos_logits, neg_logits]), dim=0)
        total = total + (log_den - log_num)
    return total


@functools.lru_cache(maxsize=16)
def timestep_probabilities(num_timesteps: int, skew: float, minimum: float = 0.0) -> torch.Tensor:
    """p(t) ∝ 1 - skew·cos(π t / T) over t = 0..T-1 (ReVersion's relation-focal importance sampling, α = skew),
    and 0 below t = ⌊minimum·T⌋: skew 0 is uniform (Textual Inversion); skew > 0 favours high noise levels, where
    the sampler decides shape, pose and count; `minimum` leaves out the low-noise steps, whose loss is large and
    carries little of a look (docs/inversion_quality.md). Returns [T] probabilities summing to 1 (cached)."""
    if not 0.0 <= skew < 1.0:
        raise ValueError(f"skew must lie in [0, 1), not {skew}")
    if not 0.0 <= minimum <= 0.95:
        raise ValueError(f"minimum must lie in [0, 0.95], not {minimum}")
    t = torch.arange(num_timesteps, dtype=torch.float64)
    weights = 1.0 - skew * torch.cos(torch.pi * t / num_timesteps)
    weights[: int(minimum * num_timesteps)] = 0.0
    return (weights / weights.sum()).float()


def sample_timesteps(n: int, num_timesteps: int, skew: float, generator: torch.Generator,
                     minimum: float = 0.0) -> torch.Tensor:
    """n training timesteps on the generator's device: uniform for skew 0 and minimum 0 (the exact random stream
    of `torch.randint`, as before the levers existed), else from `timestep_probabilities`."""
    if not skew and not minimum:
        return torch.randint(num_timesteps, (n,), generator=generator, device=generator.device)
    probs = timestep_probabilities(num_timesteps, skew, minimum).to(generator.device)
    return torch.multinomial(probs, n, replacement=True, generator=generator)


def contrast_loss(negative: torch.Tensor, positive: torch.Tensor, margin: float) -> torch.Tensor:
    """Hinge between paired per-sample denoising losses of the same without/ images, noise and t: `negative` with
    the concept caption (concept tokens in it), `positive` with the subject caption.

        L = mean_j max(0, (1 + m) · L_pos,j − L_neg,j)        (L_pos held constant)

    Zero once the concept tokens make each without/ image harder to denoise than its own caption does by the
    fraction m; until then it pushes them toward what tells the with/ images from the without/ ones. A met margin
    exerts no push, so the tokens are never driven to raise a loss without bound (docs/inversion_quality.md (an)).
    """
    if negative.shape != positive.shape:
        raise ValueError(f"negative and positive must pair up, got {tuple(negative.shape)} and {tuple(positive.shape)}")
    return torch.relu((1.0 + margin) * positive.detach() - negative).mean()


def min_snr_weights(scheduler, gamma: float) -> torch.Tensor:
    """Per-timestep loss weights of Min-SNR-γ (Hang et al., ICCV 2023; diffusers' `--snr_gamma`): with
    SNR(t) = ᾱ_t / (1 - ᾱ_t), w(t) = min(SNR, γ) / SNR for ε-prediction, min(SNR, γ) / (SNR + 1) for v-prediction,
    min(SNR, γ) for x0. Low-noise steps (SNR > γ) weigh less; gamma 0 gives all ones. Returns [T] (CPU, fp32)."""
    alphas = scheduler.alphas_cumprod.double()
    if not gamma:
        return torch.ones_like(alphas, dtype=torch.float32)
    snr = alphas / (1.0 - alphas)
    clipped = torch.clamp(snr, max=gamma)
    kind = scheduler.config.prediction_type
    weights = {"epsilon": clipped / snr, "v_prediction": clipped / (snr + 1.0), "sample": clipped}.get(kind)
    if weights is None:
        raise ValueError(f"unsupported prediction_type {kind!r}; supported: epsilon, v_prediction, sample")
    return weights.float()


def diffusion_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the denoiser is trained to predict, from the scheduler's `prediction_type`.

    epsilon: ε.  v_prediction: v = α_t ε − σ_t x0 (Salimans & Ho), via the scheduler's own `get_velocity`.
    sample: x0. Any other type is an error, not a silent fallback to ε.
    """
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if kind == "sample":
        return latents
    raise ValueError(f"unsupported prediction_type {kind!r}; supported: epsilon, v_prediction, sample")


def diffusion_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 1 per sample: mean squared error over all but the batch dimension -> [B]."""
    return (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
