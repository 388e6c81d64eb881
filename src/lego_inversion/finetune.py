"""Trainable UNet parts for the paper's fine-tuning baselines (Lego §5.1–5.2, Fig. 6): DreamBooth with LoRA and
Custom Diffusion. The base weights are never changed, in memory or on disk: each method adds its own modules.

    from lego_inversion.finetune import add_lora, add_custom_diffusion, save_unet_parts, apply_unet_parts
    params = add_lora(unet, rank=4, alpha=4.0, target_modules=("to_q", "to_k", "to_v", "to_out.0"))
    params = add_custom_diffusion(unet)              # K and V of every cross-attention, initialised from the base
    save_unet_parts(run_dir, backbone, "dreambooth") # RUN/pytorch_lora_weights.safetensors
    apply_unet_parts(backbone, run_dir)              # generation: a run's parts on a loaded backbone
    remove_unet_parts(backbone)                      # back to the base UNet

DreamBooth (Ruiz et al., CVPR 2023) fine-tunes the denoiser on the exemplars, captioned with an identifier
token; here the denoiser's attention projections get low-rank adapters (LoRA, Hu et al., ICLR 2022) through
PEFT, as diffusers' train_dreambooth_lora.py does. The written file is the diffusers LoRA format, so
`pipe.load_lora_weights(RUN, weight_name="pytorch_lora_weights.safetensors")` loads it (SD 1.x/2.x, SDXL), and
`unet.load_lora_adapter(RUN, weight_name=..., prefix="unet")` on pipelines without the LoRA loader (LDM-256,
the toy model).

Custom Diffusion (Kumari et al., CVPR 2023, §3.1) fine-tunes only the key and value projections of the
cross-attention layers (W_k, W_v: text features -> keys/values), plus the new token's embedding. diffusers'
`CustomDiffusionAttnProcessor` holds the copies, and `pipe.unet.load_attn_procs(RUN, weight_name=
"pytorch_custom_diffusion_weights.safetensors", _pipeline=pipe)` loads the file (diffusers 0.42 installs the
processors only when `_pipeline` is passed).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import UserError

LORA_FILE = "pytorch_lora_weights.safetensors"
CUSTOM_DIFFUSION_FILE = "pytorch_custom_diffusion_weights.safetensors"
LORA_ADAPTER = "lego"
METHOD_FILES = {"dreambooth": LORA_FILE, "custom-diffusion": CUSTOM_DIFFUSION_FILE}
DEFAULT_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # diffusers' train_dreambooth_lora.py


def add_lora(unet, rank: int = 4, alpha: float | None = None,
             target_modules: tuple[str, ...] = DEFAULT_LORA_TARGETS, seed: int = 0) -> list[torch.nn.Parameter]:
    """Add LoRA adapters (rank `rank`, scale alpha / rank) to the UNet's modules named by `target_modules`;
    returns their trainable parameters (fp32). The base weights stay frozen and unchanged. PEFT draws the A
    matrices from torch's global generator: they are drawn from `seed` (the global generators' states are kept), so
    the adapters do not depend on what ran before in the process."""
    from peft import LoraConfig

    if rank < 1:
        raise UserError(f"lora_rank must be at least 1, not {rank}")
    names = {name for name, _ in unet.named_modules()}
    missing = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise UserError(f"lora_targets: the UNet has no module named {missing[0]!r}; e.g. "
                        f"{', '.join(DEFAULT_LORA_TARGETS)}")
    config = LoraConfig(r=rank, lora_alpha=float(alpha if alpha is not None else rank), init_lora_weights="gaussian",
                        target_modules=list(target_modules))
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        torch.manual_seed(seed)
        unet.add_adapter(config, adapter_name=LORA_ADAPTER)
    params = [p for name, p in unet.named_parameters() if "lora_" in name]
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


def _cross_attention_layers(unet) -> dict[str, torch.nn.Module]:
    """processor name -> Attention module, for every attention layer of the UNet."""
    return {name: unet.get_submodule(name[: -len(".processor")]) for name in unet.attn_processors}


def add_custom_diffusion(unet) -> list[torch.nn.Parameter]:
    """Custom Diffusion's processors on every attention layer: trainable copies of W_k and W_v in the
    cross-attention layers (initialised from the base), plain processors elsewhere. Returns the trainable
    parameters (fp32)."""
    from diffusers.models.attention_processor import CustomDiffusionAttnProcessor

    if not hasattr(unet, "_lego_base_processors"):
        unet._lego_base_processors = dict(unet.attn_processors)  # restored by remove_unet_parts
    processors = {}
    for name, attn in _cross_attention_layers(unet).items():
        cross = attn.is_cross_attention
        proc = CustomDiffusionAttnProcessor(train_kv=cross, train_q_out=False, hidden_size=attn.to_k.out_features,
                                            cross_attention_dim=attn.to_k.in_features if cross else None)
        if cross:
            with torch.no_grad():
                proc.to_k_custom_diffusion.weight.copy_(attn.to_k.weight.float())
                proc.to_v_custom_diffusion.weight.copy_(attn.to_v.weight.float())
        processors[name] = proc.to(unet.device)
    params = [p for proc in processors.values() for p in proc.parameters()]
    unet.set_attn_processor(processors)  # (it empties the dict it is given)
    return params


def save_unet_parts(run_dir: str | Path, backbone, method: str) -> Path:
    """Write a fine-tuning method's UNet parts into the run folder in diffusers' own format (atomically)."""
    from .atomic import atomic_path

    run_dir = Path(run_dir)
    target = run_dir / METHOD_FILES[method]
    with atomic_path(target) as tmp:
        if method == "dreambooth":
            from diffusers import StableDiffusionPipeline
            from peft.utils import get_peft_model_state_dict

            state = get_peft_model_state_dict(backbone.unet, adapter_name=LORA_ADAPTER)
            layers = {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
            config = backbone.unet.peft_config[LORA_ADAPTER].to_dict()
            metadata = {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}
            StableDiffusionPipeline.save_lora_weights(tmp.parent, unet_lora_layers=layers, weight_name=tmp.name,
                                                      unet_lora_adapter_metadata=metadata)
        else:
            from safetensors.torch import save_file

            save_file(custom_diffusion_state(backbone.unet), str(tmp))
    return target


def custom_diffusion_state(unet) -> dict[str, torch.Tensor]:
    """The Custom Diffusion file's tensors, laid out as diffusers' `save_attn_procs` lays them out in its `.bin`
    format: each cross-attention's K/V copies, and an empty tensor under each other attention processor's name
    (diffusers' safetensors writer drops those empty entries, and its loader then rejects the file because the
    number of processors no longer matches the UNet's attention layers)."""
    state = {}
    for name, proc in unet.attn_processors.items():
        weights = {k: v.detach().float().cpu().contiguous() for k, v in proc.state_dict().items()} \
            if isinstance(proc, torch.nn.Module) else {}
        if weights:
            state.update({f"{name}.{k}": v for k, v in weights.items()})
        else:
            state[name] = torch.zeros(0)
    return state


def apply_unet_parts(backbone, run_dir: str | Path) -> str | None:
    """Load a run's fine-tuned UNet parts (if the run has any) onto `backbone`; returns the method or None."""
    run_dir = Path(run_dir)
    for method, name in METHOD_FILES.items():
        if not (run_dir / name).is_file():
            continue
        try:
            if method == "dreambooth":
                backbone.unet.load_lora_adapter(str(run_dir), weight_name=name, prefix="unet",
                                                adapter_name=LORA_ADAPTER)
            else:
                if not hasattr(backbone.unet, "_lego_base_processors"):
                    backbone.unet._lego_base_processors = dict(backbone.unet.attn_processors)
                # `_pipeline`: diffusers 0.42 installs the loaded processors only when it is given
                backbone.unet.load_attn_procs(str(run_dir), weight_name=name, _pipeline=backbone.pipe)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise UserError(f"{run_dir / name}: cannot load it onto {backbone.model_id} ({exc}); use the run's "
                            "base model") from None
        return method
    return None


def remove_unet_parts(backbone) -> None:
    """Back to the base UNet: drop LoRA adapters and custom attention processors."""
    unet = backbone.unet
    if getattr(unet, "peft_config", None):
        unet.unload_lora()  # the wrapped layers back to the plain base modules (not just adapters deleted)
    base = unet.__dict__.pop("_lego_base_processors", None)
    if base is not None:
        unet.set_attn_processor(dict(base))


def lora_to_kohya(run_dir: str | Path) -> dict[str, torch.Tensor]:
    """A run's LoRA in the kohya-ss layout that Automatic1111, ComfyUI and kohya load: per module
    `lora_unet_<module path with _>.lora_down.weight` (A), `.lora_up.weight` (B) and `.alpha` (scale = alpha / rank)."""
    from safetensors import safe_open

    path = Path(run_dir) / LORA_FILE
    with safe_open(str(path), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        meta = fh.metadata() or {}
    alpha = _lora_alpha(meta)
    out = {}
    for key, value in tensors.items():
        if not key.startswith("unet.") or ".lora_" not in key:
            continue
        module, _, part = key[len("unet."):].partition(".lora_")
        name = "lora_unet_" + module.replace(".", "_")
        down = part.startswith("A")
        out[f"{name}.{'lora_down' if down else 'lora_up'}.weight"] = value.contiguous()
        if down:
            out[f"{name}.alpha"] = torch.tensor(float(alpha if alpha is not None else value.shape[0]))
    if not out:
        raise UserError(f"{path}: no UNet LoRA weights in it")
    return out


def _lora_alpha(meta: dict[str, str]) -> float | None:
    """lora_alpha recorded in a diffusers LoRA file's metadata (`lora_adapter_metadata`: {"unet.lora_alpha": ...})."""
    import json

    try:
        data = json.loads(meta.get("lora_adapter_metadata", "{}"))
    except ValueError:
        return None
    value = next((v for k, v in data.items() if k.split(".")[-1] == "lora_alpha"), None)
    return float(value) if value is not None else None


def trainable_count(params: list[torch.nn.Parameter]) -> int:
    return sum(p.numel() for p in params)
