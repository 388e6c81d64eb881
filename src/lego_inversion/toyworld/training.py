"""Train the toy text-to-image model: render its data, train the VAE, cache latents, train the UNet, export.

    lego toyworld train --out runs/toy_model --seed 0          # ~45 min on 2 CPU cores, resumable
    lego toyworld install-model runs/toy_model/model           # copy the export into the package

    from lego_inversion.toyworld.training import train
    from lego_inversion.toyworld.train_configs import TrainConfig
    train(TrainConfig(out="runs/toy_model"))                    # -> runs/toy_model/model

Five phases, each a function: `render_training_set` (scenes and captions of `training_data`),
`train_vae` (L1 + L2 + KL), `encode_training_set` (latent posteriors, scaling factor, BERT states of every
caption, cached in memory), `train_unet` (the epsilon objective, Eq. 1 of Lego, with caption dropout for
classifier-free guidance and an EMA copy) and `model.export_model` (the EMA weights). The VAE and UNet phases
checkpoint to `vae_state.pt` / `unet_state.pt` in the run folder and resume from them. Thread count is the
caller's (the `lego` entry point sets it); it is recorded in training.json.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_torch_save
from .model import LOSS_WINDOW, build_scheduler, build_unet, build_vae, encode_prompts, export_model, \
    images_to_tensor, load_text_encoder
from .train_configs import TrainConfig, is_exported_model

VAE_STATE, UNET_STATE = "vae_state.pt", "unet_state.pt"  # resumable checkpoints in the run folder
EXPORT = "model"  # the exported pipeline folder in the run folder
VAE_KL_WEIGHT = 1e-6  # weight of the KL term against L1 + L2 reconstruction
VAE_LR_FLOOR = 0.1  # the VAE learning rate decays along a cosine to this fraction of its peak
LATENT_FACTOR = 8  # the VAE's downsampling: random crops start on this grid so that latents stay aligned
UNET_WEIGHT_DECAY = 0.01
GRAD_CLIP_NORM = 1.0  # UNet gradient-norm clip
EMA_WARMUP = 10  # EMA decay ramps as (1 + step) / (EMA_WARMUP + step) up to cfg.ema_decay
ENCODE_BATCH = 256  # images per VAE forward when caching latents
LOG_EVERY = 50  # steps between log lines; the UNet line averages the loss over this many steps
# Each phase draws from its own generator, seeded from cfg.seed, so resuming one phase leaves the others alone.
VAE_SEED_OFFSET, UNET_SEED_OFFSET = 1, 2


@dataclass
class TrainingSet:
    """The UNet phase's data: VAE posteriors of every image and the BERT states of every unique caption."""

    latent_mean: torch.Tensor
    latent_std: torch.Tensor
    scaling_factor: float
    text_states: torch.Tensor  # one row per unique caption; the last row is the empty caption
    caption_index: torch.Tensor  # image -> row of text_states

    @property
    def empty_caption(self) -> int:
        return len(self.text_states) - 1


def _log(fh, msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=fh, flush=True)


def render_training_set(cfg: TrainConfig, log=sys.stdout) -> tuple[torch.Tensor, list[str]]:
    """Images (N, 3, 64, 64) in [-1, 1] and their captions, from the training mixture of `cfg`."""
    from tqdm import tqdm

    from .render import render
    from .training_data import caption, sample_scenes

    rng = np.random.default_rng(cfg.seed)
    scenes = sample_scenes(cfg.n_images, cfg.seed, cfg.p_none, cfg.p_generic)
    captions = [caption(s, rng, cfg.p_describe, cfg.p_count_number) for s in scenes]
    _log(log, f"rendering {len(scenes)} scenes")
    images = images_to_tensor(render(s) for s in tqdm(scenes, desc="render", file=log, mininterval=30))
    return images, captions


def _vae_lr(cfg: TrainConfig, step: int) -> float:
    """Cosine decay from cfg.vae_lr to VAE_LR_FLOOR * cfg.vae_lr over the VAE phase."""
    mid, amplitude = (1 + VAE_LR_FLOOR) / 2, (1 - VAE_LR_FLOOR) / 2
    return float(cfg.vae_lr * (mid + amplitude * np.cos(np.pi * step / cfg.vae_steps)))


def _random_crop(x: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """The same random crop of every image in the batch, on the LATENT_FACTOR grid."""
    if size >= x.shape[-1]:
        return x
    positions = (x.shape[-1] - size) // LATENT_FACTOR + 1
    oy, ox = (int(v) * LATENT_FACTOR for v in torch.randint(0, positions, (2,), generator=g))
    return x[:, :, oy:oy + size, ox:ox + size]


def train_vae(cfg: TrainConfig, images: torch.Tensor, run_dir: Path, t0: float, log=sys.stdout):
    """The autoencoder, trained (or resumed) to cfg.vae_steps; a fine-tune reuses its init run's VAE as is."""
    vae = build_vae()
    ckpt = run_dir / VAE_STATE
    if cfg.init_from and not ckpt.exists():
        if is_exported_model(cfg.init_from):  # an exported model's VAE counts as a finished VAE phase
            from diffusers import AutoencoderKL

            sd = AutoencoderKL.from_pretrained(Path(cfg.init_from) / "vqvae").float().state_dict()
            atomic_torch_save(ckpt, {"step": cfg.vae_steps, "model": sd})
        else:
            shutil.copyfile(Path(cfg.init_from) / VAE_STATE, ckpt)
    state = torch.load(ckpt, weights_only=True) if ckpt.exists() else {"step": 0}
    if "model" in state:
        vae.load_state_dict(state["model"])
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    if "opt" in state:
        opt.load_state_dict(state["opt"])
    g = torch.Generator().manual_seed(cfg.seed + VAE_SEED_OFFSET)
    last = cfg.vae_steps - 1
    for step in range(state["step"], cfg.vae_steps):
        x = images[torch.randint(0, len(images), (cfg.vae_batch,), generator=g)]
        x = _random_crop(x, cfg.vae_crop, g)
        posterior = vae.encode(x).latent_dist
        rec = vae.decode(posterior.sample(generator=g)).sample
        rec_loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean()
        loss = rec_loss + VAE_KL_WEIGHT * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for group in opt.param_groups:
            group["lr"] = _vae_lr(cfg, step)
        if step % LOG_EVERY == 0 or step == last:
            _log(log, f"vae step {step} rec {rec_loss.item():.4f} elapsed {time.time() - t0:.0f}s")
        if (step + 1) % cfg.checkpoint_every == 0 or step == last:
            atomic_torch_save(ckpt, {"step": step + 1, "model": vae.state_dict(), "opt": opt.state_dict()})
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def encode_training_set(vae, images: torch.Tensor, captions: list[str], log=sys.stdout) -> TrainingSet:
    """Latent posteriors (the VAE gets the scaling factor that gives them unit std) and caption states."""
    posteriors = [vae.encode(images[i:i + ENCODE_BATCH]).latent_dist for i in range(0, len(images), ENCODE_BATCH)]
    mean = torch.cat([d.mean for d in posteriors])
    std = torch.cat([d.std for d in posteriors])
    scaling = float(1.0 / mean.std())
    vae.register_to_config(scaling_factor=scaling)
    _log(log, f"latents {tuple(mean.shape)} std {mean.std():.3f} -> scaling_factor {scaling:.4f}")
    bert, tokenizer = load_text_encoder()
    unique = [*sorted(set(captions)), ""]
    row = {c: i for i, c in enumerate(unique)}
    states = encode_prompts(bert, tokenizer, unique)
    _log(log, f"{len(unique) - 1} unique captions encoded")
    return TrainingSet(mean, std, scaling, states, torch.tensor([row[c] for c in captions]))


def _save_unet(path: Path, step: int, unet, ema, opt, losses: list[float]) -> None:
    atomic_torch_save(path, {"step": step, "model": unet.state_dict(), "ema": ema.state_dict(),
                             "opt": opt.state_dict(), "losses": losses})


def _load_unet(cfg: TrainConfig, ckpt: Path):
    """(unet, ema, optimizer, state): resumed from `ckpt`, else a fine-tune's init EMA, else fresh weights."""
    unet, ema = build_unet(), build_unet()
    state = torch.load(ckpt, weights_only=True) if ckpt.exists() else {"step": 0}
    if "model" in state:
        unet.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
    elif cfg.init_from:  # fine-tune from the EMA weights of an earlier run; fresh optimizer and step count
        if is_exported_model(cfg.init_from):
            from diffusers import UNet2DConditionModel

            init = UNet2DConditionModel.from_pretrained(Path(cfg.init_from) / "unet").float().state_dict()
        else:
            init = torch.load(Path(cfg.init_from) / UNET_STATE, weights_only=True)["ema"]
        unet.load_state_dict(init)
        ema.load_state_dict(init)
    else:
        ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.unet_lr, weight_decay=UNET_WEIGHT_DECAY)
    if "opt" in state:
        opt.load_state_dict(state["opt"])
    return unet, ema, opt, state


def train_unet(cfg: TrainConfig, data: TrainingSet, run_dir: Path, t0: float, log=sys.stdout):
    """(EMA UNet, steps done, loss history): epsilon prediction on noised latents until cfg.unet_steps or the
    time budget, whichever comes first; checkpoints every cfg.checkpoint_every steps and at the end."""
    ckpt = run_dir / UNET_STATE
    unet, ema, opt, state = _load_unet(cfg, ckpt)
    schedule = build_scheduler("ddpm")
    timesteps = schedule.config.num_train_timesteps
    alphas_cumprod = schedule.alphas_cumprod
    step = state["step"]
    g = torch.Generator().manual_seed(cfg.seed + UNET_SEED_OFFSET + step)
    losses: list[float] = state.get("losses", [])
    while step < cfg.unet_steps and (time.time() - t0) / 60 < cfg.time_budget_min:
        idx = torch.randint(0, len(data.latent_mean), (cfg.unet_batch,), generator=g)
        mean = data.latent_mean[idx]
        z0 = (mean + data.latent_std[idx] * torch.randn(mean.shape, generator=g)) * data.scaling_factor
        captions = data.caption_index[idx].clone()
        captions[torch.rand(cfg.unet_batch, generator=g) < cfg.cfg_dropout] = data.empty_caption
        t = torch.randint(0, timesteps, (cfg.unet_batch,), generator=g)
        noise = torch.randn(z0.shape, generator=g)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        loss = ((unet(zt, t, data.text_states[captions]).sample - noise) ** 2).mean()  # Eq. 1 of Lego
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), GRAD_CLIP_NORM)
        for group in opt.param_groups:
            group["lr"] = cfg.unet_lr * min(1.0, (step + 1) / cfg.warmup)
        opt.step()
        with torch.no_grad():
            decay = min(cfg.ema_decay, (1 + step) / (EMA_WARMUP + step))
            for pe, pm in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(pm, 1 - decay)
        losses.append(loss.item())
        step += 1
        if step % LOG_EVERY == 0:
            _log(log, f"unet step {step} loss(avg{LOG_EVERY}) {np.mean(losses[-LOG_EVERY:]):.4f} "
                      f"elapsed {time.time() - t0:.0f}s")
        if step % cfg.checkpoint_every == 0:
            _save_unet(ckpt, step, unet, ema, opt, losses)
    _save_unet(ckpt, step, unet, ema, opt, losses)
    return ema, step, losses


def _command() -> str:
    if sys.argv[0].endswith("lego"):
        return " ".join(["lego", *sys.argv[1:]])
    return "PYTHONPATH=src python3 " + " ".join(sys.argv)


def train(cfg: TrainConfig, log=sys.stdout) -> Path:
    """Run every phase (resuming the ones with checkpoints) and export the EMA model to `cfg.out/model`."""
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    torch.manual_seed(cfg.seed)  # the initial weights of the VAE, then (after the VAE phase) of the UNet
    images, captions = render_training_set(cfg, log)
    vae = train_vae(cfg, images, run_dir, t0, log)
    data = encode_training_set(vae, images, captions, log)
    del images
    ema, steps_done, losses = train_unet(cfg, data, run_dir, t0, log)
    record = {
        "command": _command(), "config": asdict(cfg), "unet_steps_done": steps_done,
        "final_loss_avg200": float(np.mean(losses[-LOSS_WINDOW:])) if losses else None,
        "wall_time_min": round((time.time() - t0) / 60, 1), "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    export = export_model(vae, ema, run_dir / EXPORT, record)
    _log(log, f"exported {export} ({record})")
    return export
