"""The oracle: a small CNN that reads a toy-world image and says what is in it (the benchmark's ground truth).

    from lego_inversion.toyworld.oracle import Oracle
    oracle = Oracle.load()                          # bundled weights (weights/oracle/oracle.safetensors)
    oracle.predict([pil_image])                     # [{"subject": "cube", "appearance": "red", "concept": ...}]
    lego toyworld train-oracle --out runs/oracle    # ~15 min on 2 CPU cores; then copy into weights/oracle/

Heads: subject class, appearance (colour or the checkered texture), concept (or "none"), variant within the
concept (0 = generic, >= 1 = personalized), and count (1-5). Trained on fresh renders drawn uniformly over
concepts and variants, with noise / blur / down-up-sampling augmentation so that it also reads the blurrier
samples of the toy diffusion model. It gives the oracle-scored metrics of the toy-world ablation (Fig. 9 and
Table 2 of Lego: concept success, subject leakage, target fidelity). It reads one 64x64 scene; `scene_warning`
says when an image is something else (a grid or strip of several scenes gets a meaningless verdict).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_save_file, atomic_write_json
from ..documents import read_document
from ..errors import UserError
from . import BUNDLED_ORACLE
from .render import APPEARANCES, CONCEPT_NAMES, CONCEPTS, SIZE, SUBJECTS, Scene, render
from .train_configs import OracleTrainConfig

HEADS = {"subject": len(SUBJECTS), "appearance": len(APPEARANCES), "concept": len(CONCEPT_NAMES),
         "variant": max(CONCEPTS.values()), "count": 5}
WEIGHTS_FILE, META_FILE = "oracle.safetensors", "oracle.json"
TEST_SEED_OFFSET = 10_000  # the recorded accuracy uses scenes drawn from cfg.seed + this: never trained on
STRIP_ASPECT = 1.25  # width/height beyond this (or below its inverse): several scenes side by side
WEIGHT_DECAY = 1e-4
WARMUP_FRACTION = 0.1  # share of the one-cycle schedule spent raising the learning rate
LOG_EVERY = 100


def labels(scene: Scene) -> dict[str, int]:
    """Class indices of a scene for each head."""
    return {"subject": SUBJECTS.index(scene.subject), "appearance": APPEARANCES.index(scene.appearance),
            "concept": CONCEPT_NAMES.index(scene.concept), "variant": scene.variant, "count": scene.count - 1}


def decode(idx: dict[str, int]) -> dict:
    return {"subject": SUBJECTS[idx["subject"]], "appearance": APPEARANCES[idx["appearance"]],
            "concept": CONCEPT_NAMES[idx["concept"]], "variant": int(idx["variant"]), "count": idx["count"] + 1}


def sample_uniform(n: int, seed: int) -> list[Scene]:
    """Scenes drawn uniformly over subject, appearance, concept (incl. none), variant and count."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        concept = CONCEPT_NAMES[rng.integers(len(CONCEPT_NAMES))]
        variant = int(rng.integers(CONCEPTS.get(concept, 1)))
        count = int(rng.integers(2, 6)) if concept == "count" else 1
        out.append(Scene(SUBJECTS[rng.integers(len(SUBJECTS))], APPEARANCES[rng.integers(len(APPEARANCES))],
                         concept, variant, count, seed=int(rng.integers(2**31))))
    return out


class OracleNet(nn.Module):
    def __init__(self, width: int = 24):
        super().__init__()
        w = width

        def block(i, o, stride=1):
            return [nn.Conv2d(i, o, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(True)]

        self.features = nn.Sequential(
            *block(3, w, stride=2),  # 32x32
            *block(w, 2 * w), nn.MaxPool2d(2),  # 16x16
            *block(2 * w, 3 * w), nn.MaxPool2d(2),  # 8x8
            *block(3 * w, 4 * w), *block(4 * w, 4 * w),
        )
        self.heads = nn.ModuleDict({k: nn.Linear(8 * w, n) for k, n in HEADS.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        f = torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1)
        return {k: h(f) for k, h in self.heads.items()}


def to_tensor(images) -> torch.Tensor:
    """PIL images (any size, RGB) -> float tensor in [-1, 1] at 64x64."""
    arr = [np.asarray(im.convert("RGB").resize((64, 64)), dtype=np.float32) for im in images]
    return torch.from_numpy(np.stack(arr) / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Noise, blur, down-up sampling and mild brightness/contrast changes (never hue: colour is a label)."""
    n = x.shape[0]
    u = torch.rand(n, 4, generator=g)
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    x = torch.where((u[:, 0] < 0.35).view(-1, 1, 1, 1), blur, x)
    du = F.interpolate(F.interpolate(x, size=32, mode="bilinear", antialias=True), size=64, mode="bilinear")
    x = torch.where((u[:, 1] < 0.35).view(-1, 1, 1, 1), du, x)
    scale = 1 + 0.15 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
    shift = 0.1 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
    x = x * scale + shift
    sigma = 0.08 * torch.rand(n, 1, 1, 1, generator=g) * (u[:, 2] < 0.6).view(-1, 1, 1, 1)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)


class Oracle:
    def __init__(self, net: OracleNet, meta: dict | None = None):
        self.net = net.eval()
        self.meta = meta or {}

    @classmethod
    def load(cls, folder: str | Path = BUNDLED_ORACLE) -> Oracle:
        from safetensors.torch import load_file

        folder = Path(folder)
        wfile, mfile = folder / WEIGHTS_FILE, folder / META_FILE
        if not wfile.is_file() or not mfile.is_file():
            raise UserError(f"{folder}: no {WEIGHTS_FILE}/{META_FILE}; run `lego toyworld train-oracle`")
        meta = read_document(mfile, fix="run `lego toyworld train-oracle`")
        net = OracleNet(meta["width"])
        net.load_state_dict({k: v.float() for k, v in load_file(wfile).items()})
        return cls(net, meta)

    @torch.no_grad()
    def logits(self, images) -> dict[str, torch.Tensor]:
        x = images if isinstance(images, torch.Tensor) else to_tensor(images)
        outs = [self.net(x[i:i + 256]) for i in range(0, len(x), 256)]
        return {k: torch.cat([o[k] for o in outs]) for k in HEADS}

    def predict(self, images) -> list[dict]:
        """One dict per image: subject, appearance, concept, variant, count (decoded labels)."""
        lg = self.logits(images)
        idx = {k: v.argmax(1).tolist() for k, v in lg.items()}
        return [decode({k: idx[k][i] for k in HEADS}) for i in range(len(idx["subject"]))]


def accuracy(oracle: Oracle, scenes: list[Scene], images=None) -> dict[str, float]:
    """Per-head accuracy on `scenes` (rendered unless `images` given). Variant is scored only where the
    true concept is not none; count everywhere."""
    images = images if images is not None else [render(s) for s in scenes]
    preds = oracle.predict(images)
    res = {}
    for k in HEADS:
        pairs = [(p, labels(s)) for p, s in zip(preds, scenes) if k != "variant" or s.concept != "none"]
        res[k] = float(np.mean([labels(Scene(p["subject"], p["appearance"]))[k] == t[k] if k in
                                ("subject", "appearance") else _idx(p, k) == t[k] for p, t in pairs]))
    return res


def _idx(p: dict, k: str) -> int:
    return {"concept": CONCEPT_NAMES.index(p["concept"]), "variant": p["variant"], "count": p["count"] - 1}[k]


def train_oracle(cfg: OracleTrainConfig, log=sys.stdout) -> dict:
    """Train on fresh renders, measure per-head accuracy on cfg.n_test unseen renders with the stored (fp16)
    weights, write oracle.safetensors + oracle.json under cfg.out; returns the accuracy."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    t0 = time.time()
    scenes = sample_uniform(cfg.n_images, cfg.seed)
    x = to_tensor(tqdm([render(s) for s in scenes], desc="render", file=log, mininterval=30))
    y = {k: torch.tensor([labels(s)[k] for s in scenes]) for k in HEADS}
    has_concept = torch.tensor([s.concept != "none" for s in scenes])
    net = OracleNet(cfg.width)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=WARMUP_FRACTION)
    g = torch.Generator().manual_seed(cfg.seed)
    net.train()
    for step in range(cfg.steps):
        idx = torch.randint(0, len(x), (cfg.batch,), generator=g)
        out = net(augment(x[idx], g))
        loss = sum(F.cross_entropy(out[k], y[k][idx], reduction="none").mul(
            has_concept[idx].float() if k == "variant" else 1.0).mean() for k in HEADS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % LOG_EVERY == 0:
            print(f"oracle step {step} loss {loss.item():.4f} {time.time() - t0:.0f}s", file=log, flush=True)
    with torch.no_grad():  # evaluate exactly what is stored: fp16 weights
        for v in net.state_dict().values():
            if v.is_floating_point():
                v.copy_(v.half().float())
    oracle = Oracle(net.eval(), {"width": cfg.width})
    test = sample_uniform(cfg.n_test, cfg.seed + TEST_SEED_OFFSET)
    acc = accuracy(oracle, test)
    meta = {"width": cfg.width, "heads": HEADS, "fresh_render_accuracy": acc, "n_test": len(test),
            "config": asdict(cfg), "wall_time_min": round((time.time() - t0) / 60, 1),
            "command": " ".join(sys.argv), "threads": torch.get_num_threads()}
    out = Path(cfg.out)
    state = net.state_dict()
    atomic_save_file(out / WEIGHTS_FILE, {k: v.half() if v.is_floating_point() else v for k, v in state.items()})
    atomic_write_json(out / META_FILE, meta)
    print(f"oracle accuracy on {len(test)} fresh renders: {acc}", file=log, flush=True)
    return acc


def scene_warning(size: tuple[int, int]) -> str | None:
    """Why an image of `size` (width, height) is not one toy-world scene, or None if it is one.

    The oracle resizes every image to 64x64, so a grid or strip of several scenes still gets a confident but
    meaningless verdict; the CLI prints this beside it."""
    width, height = size
    if (width, height) == (SIZE, SIZE):
        return None
    aspect = width / height
    if not 1 / STRIP_ASPECT <= aspect <= STRIP_ASPECT:
        return (f"{width}x{height} (aspect {aspect:.2f}) looks like several scenes side by side; the oracle reads "
                f"one {SIZE}x{SIZE} scene, so crop one scene for a meaningful verdict")
    return (f"{width}x{height} is not the {SIZE}x{SIZE} render size: read as one scene resized to {SIZE}x{SIZE} "
            "(a grid of several scenes gets a meaningless verdict; crop one scene)")
