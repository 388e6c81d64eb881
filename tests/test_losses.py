"""Eq. 1 / Eq. 2 against independent hand computations."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from lego_inversion.losses import (
    contrast_loss,
    context_loss,
    diffusion_loss,
    diffusion_target,
    min_snr_weights,
    sample_timesteps,
    timestep_probabilities,
)


def hand_context_loss(c, positives, negatives, tau):
    """Eq. 2 written out literally with numpy: -Σ_i log(Σ_k e^{s/τ} / (Σ_k e^{s/τ} + Σ_k e^{s'/τ}))."""
    total = 0.0
    for ci, P, N in zip(c, positives, negatives):
        def cos(a, b):
            return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))

        num = sum(math.exp(cos(ci, p) / tau) for p in P)
        den = num + sum(math.exp(cos(ci, n) / tau) for n in N)
        total += -math.log(num / den)
    return total


@pytest.mark.parametrize("tau", [0.07, 0.5, 2.0])
def test_context_loss_matches_hand_computation(tau):
    rng = np.random.default_rng(0)
    c = rng.normal(size=(2, 5))
    P = [rng.normal(size=(3, 5)), rng.normal(size=(1, 5))]
    N = [rng.normal(size=(2, 5)), rng.normal(size=(4, 5))]
    got = context_loss(torch.tensor(c), [torch.tensor(p) for p in P], [torch.tensor(n) for n in N], temperature=tau)
    assert got.shape == ()
    assert float(got) == pytest.approx(hand_context_loss(c, P, N, tau), rel=1e-5)


def test_context_loss_pulls_towards_positives():
    pos, neg = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    near_pos = context_loss(torch.tensor([[0.9, 0.1]]), [pos], [neg])
    near_neg = context_loss(torch.tensor([[0.1, 0.9]]), [pos], [neg])
    assert near_pos < near_neg
    c = torch.tensor([[0.5, 0.5]], requires_grad=True)
    context_loss(c, [pos], [neg]).backward()
    assert c.grad[0, 0] < 0 < c.grad[0, 1]  # gradient descent moves c towards the positive, away from the negative


def test_context_loss_rejects_empty_sets():
    with pytest.raises(ValueError):
        context_loss(torch.ones(1, 2), [torch.ones(0, 2)], [torch.ones(1, 2)])


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_diffusion_target_by_prediction_type(kind):
    sched = DDPMScheduler(num_train_timesteps=1000, prediction_type=kind)
    x0, eps = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    t = torch.tensor([0, 500, 999])
    got = diffusion_target(sched, x0, eps, t)
    abar = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = {"epsilon": eps, "sample": x0, "v_prediction": abar.sqrt() * eps - (1 - abar).sqrt() * x0}[kind]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_unknown_prediction_type_is_an_error():
    sched = DDPMScheduler()
    sched.register_to_config(prediction_type="flow")
    with pytest.raises(ValueError, match="flow"):
        diffusion_target(sched, torch.zeros(1), torch.zeros(1), torch.zeros(1, dtype=torch.long))


def test_diffusion_loss_is_per_sample_mse():
    pred, target = torch.zeros(2, 1, 2, 2), torch.tensor([1.0, 3.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2)
    torch.testing.assert_close(diffusion_loss(pred, target), torch.tensor([1.0, 9.0]))


def test_dot_context_loss_matches_eq2_as_printed():
    """Eq. 2 exactly as the paper prints it: exp(c · P_ik), no normalisation, no τ (τ must not matter)."""
    rng = np.random.default_rng(1)
    c = rng.normal(size=(2, 4)) * 0.5
    P = [rng.normal(size=(2, 4)), rng.normal(size=(3, 4))]
    N = [rng.normal(size=(3, 4)), rng.normal(size=(1, 4))]
    expected = 0.0
    for ci, Pi, Ni in zip(c, P, N):
        num = sum(math.exp(float(np.dot(ci, p))) for p in Pi)
        expected += -math.log(num / (num + sum(math.exp(float(np.dot(ci, n))) for n in Ni)))
    args = (torch.tensor(c), [torch.tensor(p) for p in P], [torch.tensor(n) for n in N])
    for tau in (0.07, 3.0):
        assert float(context_loss(*args, temperature=tau, similarity="dot")) == pytest.approx(expected, rel=1e-5)
    assert float(context_loss(*args, similarity="cosine")) != pytest.approx(expected, rel=1e-3)
    with pytest.raises(ValueError, match="similarity"):
        context_loss(*args, similarity="l2")


def test_timestep_probabilities_follow_reversion_weights():
    """p(t) = (1 - α cos(π t / T)) / Σ, written out by hand for T = 4, α = 0.5; α = 0 is uniform."""
    w = [1 - 0.5 * math.cos(math.pi * t / 4) for t in range(4)]  # 0.5, 1 - 0.5·0.7071, 1, 1 + 0.5·0.7071
    p = timestep_probabilities(4, 0.5)
    assert p.tolist() == pytest.approx([x / sum(w) for x in w], rel=1e-6)
    assert p[-1] / p[0] == pytest.approx((1 + 0.5 * math.cos(math.pi / 4)) / 0.5, rel=1e-6)
    assert timestep_probabilities(10, 0.0).tolist() == pytest.approx([0.1] * 10)
    big = timestep_probabilities(1000, 0.5)
    assert float(big[500:].sum()) > 0.6  # most mass on the noisier half
    with pytest.raises(ValueError):
        timestep_probabilities(10, 1.0)


def test_timestep_minimum_leaves_out_the_low_noise_steps():
    """minimum 0.5 of T = 4: t = 0, 1 get 0; t = 2, 3 keep their ReVersion weights 1 - α cos(π t / 4), renormalised."""
    w = [1 - 0.5 * math.cos(math.pi * t / 4) for t in (2, 3)]  # 1 and 1 + 0.5·0.7071
    p = timestep_probabilities(4, 0.5, minimum=0.5)
    assert p.tolist() == pytest.approx([0.0, 0.0, w[0] / sum(w), w[1] / sum(w)], rel=1e-6)
    drawn = sample_timesteps(2000, 1000, 0.0, torch.Generator().manual_seed(0), minimum=0.7)
    assert int(drawn.min()) >= 700 and float(drawn.float().mean()) == pytest.approx(849.5, abs=10)
    with pytest.raises(ValueError):
        timestep_probabilities(10, 0.0, minimum=0.99)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_min_snr_weights_by_hand(kind):
    """Min-SNR-γ (Hang et al. 2023): SNR = ᾱ/(1-ᾱ); ε: min(SNR, γ)/SNR; v: min(SNR, γ)/(SNR+1)."""
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", prediction_type=kind)
    w = min_snr_weights(sched, 5.0)
    for t in (0, 50, 300, 999):
        a = float(sched.alphas_cumprod[t])
        snr = a / (1 - a)
        want = min(snr, 5.0) / (snr if kind == "epsilon" else snr + 1)
        assert float(w[t]) == pytest.approx(want, rel=1e-5)
    if kind == "epsilon":
        assert float(w[0]) < 0.01 and float(w[999]) == pytest.approx(1.0)  # low noise weighs less; high noise 1
    assert torch.equal(min_snr_weights(sched, 0.0), torch.ones(1000))


def test_contrast_loss_by_hand():
    """mean_j max(0, (1 + m)·pos_j − neg_j), pos held constant: with m 0.1, pos 1 and neg 0.5, 1, 2 the hinges are
    0.6, 0.1 and 0, so the loss is 0.7 / 3 and only the two unmet negatives get a gradient, −1/3 each."""
    neg = torch.tensor([0.5, 1.0, 2.0], requires_grad=True)
    pos = torch.ones(3, requires_grad=True)
    loss = contrast_loss(neg, pos, margin=0.1)
    assert float(loss) == pytest.approx(0.7 / 3)
    loss.backward()
    torch.testing.assert_close(neg.grad, torch.tensor([-1 / 3, -1 / 3, 0.0]))
    assert pos.grad is None  # the subject caption's loss is the reference, not pushed
    with pytest.raises(ValueError, match="pair up"):
        contrast_loss(neg, pos[:2], margin=0.1)
