"""Evaluator models for `lego evaluate`: BLIP-2 yes/no VQA, open-vocabulary counting, CLIP and DINOv2 embeddings.

    vqa = BlipVqa("Salesforce/blip2-flan-t5-xl", device="cuda")        # the VQA model of §5.3 (Flan-T5 XL)
    vqa.score(images, ["Is the toy bear frozen in ice?", ...])        # -> [(log p(yes), log p(no)), ...]
    det = Detector("google/owlv2-base-patch16-ensemble")              # OWLv2 / OWL-ViT / Grounding DINO
    det.detect(images, ["toy bear", ...])                             # -> [(scores, boxes), ...]
    CLIPEmbedder(...).images(images) / .texts(texts);  DinoEmbedder(...).images(images)

Every model loads from a local folder or a Hugging Face hub id (from the local cache; online only when
HF_HUB_OFFLINE is unset). A model that cannot be found is one `UserError` naming the field to fix.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import UserError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_pretrained(loader, model_id: str, field: str, **kwargs):
    """`loader(model_id, **kwargs)` from a local folder or the hub cache; failures become one clear line."""
    local = Path(model_id).expanduser()
    if local.exists():
        try:
            return loader(str(local), **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"{field} = {model_id!r}: the folder is not a usable model "
                            f"({str(exc).splitlines()[0][:160]}); point it at a `save_pretrained` folder") from None
    if model_id.startswith((".", "/", "~")) or os.sep in model_id.strip("/").replace("/", "", 1):
        raise UserError(f"{field} = {model_id!r}: no such local folder; fix the path")
    try:
        return loader(model_id, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        pass
    if _offline():
        raise UserError(f"{field} = {model_id!r}: not a local folder and not in the Hugging Face cache (offline); "
                        f"{download_hint(model_id)}")
    try:
        return loader(model_id, **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"{field} = {model_id!r}: cannot load it ({str(exc).splitlines()[0][:160]}); check the "
                        "id and the network, or pass a local folder") from None


def download_hint(model_id: str) -> str:
    """What to do about a hub model that is not in the cache (the `hf` command of today's huggingface_hub)."""
    return f"run `hf download {model_id}` on a connected machine or pass a local folder"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no")


def check_model(model_id: str, field: str) -> None:
    """Fail fast, before any generation, when an evaluator model cannot be had.

    OK: a local folder, or a hub id in the local Hugging Face cache, or (online) a reachable hub. Otherwise one
    clear line instead of minutes of download retries.
    """
    local = Path(model_id).expanduser()
    if local.is_dir():
        return
    if local.exists() or model_id.startswith((".", "/", "~")) or model_id.count("/") > 1:
        raise UserError(f"{field} = {model_id!r}: no such model folder; fix the path or give a hub id")
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(model_id, "config.json"), str):
            return
    except Exception:  # an id the hub client rejects is reported below
        pass
    hint = download_hint(model_id)
    if _offline():
        raise UserError(f"{field} = {model_id!r}: not a local folder and not in the Hugging Face cache "
                        f"(HF_HUB_OFFLINE is set); {hint}")
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), 3).close()
    except OSError:
        raise UserError(f"{field} = {model_id!r}: not a local folder, not in the Hugging Face cache, and "
                        f"{url.hostname} cannot be reached (no network?); {hint}") from None


def _pooled(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _rgb(images):
    return [im.convert("RGB") for im in images]


class BlipVqa:
    """Yes/no VQA with BLIP-2 (§5.3 of Lego): compare log p("yes") with log p("no") instead of parsing text.

    The prompt is "Question: {q} Answer:"; an answer's log-likelihood is the sum of its token log-probabilities
    (for Flan-T5 that includes the end-of-sequence token, i.e. the answer is exactly "yes" / "no").
    """

    PROMPT = "Question: {} Answer:"

    def __init__(self, model_id: str, device: str | torch.device = "cpu", dtype: str = "float32",
                 field: str = "models.vqa"):
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        self.device = torch.device(device)
        self.processor = load_pretrained(Blip2Processor.from_pretrained, model_id, field)
        self.model = load_pretrained(Blip2ForConditionalGeneration.from_pretrained, model_id, field,
                                     dtype=_DTYPES[dtype]).to(self.device).eval()
        if getattr(self.processor, "num_query_tokens", None) is None:
            self.processor.num_query_tokens = self.model.config.num_query_tokens
        self.decoder_only = bool(self.model.config.use_decoder_only_language_model)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left" if self.decoder_only else "right"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @torch.no_grad()
    def score(self, images, questions: list[str]) -> list[tuple[float, float]]:
        """(log p("yes"), log p("no")) for each (image, question) pair."""
        n = len(images)
        prompts = [self.PROMPT.format(q.strip()) for q in questions]
        answers = ["yes"] * n + ["no"] * n
        images2 = _rgb(images) * 2
        if self.decoder_only:
            texts = [p + " " + a for p, a in zip(prompts * 2, answers)]
            enc = self.processor(images=images2, text=texts, return_tensors="pt", padding=True).to(self.device)
            logits = self.model(**enc).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            ids = enc["input_ids"]
            out = []
            for i, a in enumerate(answers):
                k = len(self.tokenizer(" " + a, add_special_tokens=False)["input_ids"])
                tgt = ids[i, -k:]
                out.append(float(logp[i, -k:].gather(-1, tgt[:, None]).sum()))
        else:
            enc = self.processor(images=images2, text=prompts * 2, return_tensors="pt", padding=True).to(self.device)
            lab = self.tokenizer(answers, return_tensors="pt", padding=True)
            labels = lab["input_ids"].masked_fill(lab["attention_mask"] == 0, -100).to(self.device)
            logits = self.model(**enc, labels=labels).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            mask = labels != -100
            tok = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
            out = [float(v) for v in (tok * mask).sum(-1)]
        return [(out[i], out[n + i]) for i in range(n)]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> list[int]:
    """Greedy non-maximum suppression (xyxy boxes); indices kept, highest score first."""
    order = scores.argsort(descending=True).tolist()
    keep: list[int] = []
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    for i in order:
        ok = True
        for j in keep:
            x0 = max(boxes[i, 0], boxes[j, 0]); y0 = max(boxes[i, 1], boxes[j, 1])  # noqa: E702
            x1 = min(boxes[i, 2], boxes[j, 2]); y1 = min(boxes[i, 3], boxes[j, 3])  # noqa: E702
            inter = max(0.0, float(x1 - x0)) * max(0.0, float(y1 - y0))
            union = float(area[i] + area[j]) - inter
            if union > 0 and inter / union > iou:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def count_detections(scores: list[float], boxes: list[list[float]], threshold: float, iou: float) -> int:
    """Subjects counted in one image: detections with score >= threshold, after NMS at `iou`."""
    sel = [i for i, s in enumerate(scores) if s >= threshold]
    if not sel:
        return 0
    b = torch.tensor([boxes[i] for i in sel], dtype=torch.float64)
    s = torch.tensor([scores[i] for i in sel], dtype=torch.float64)
    return len(nms(b, s, iou))


class Detector:
    """Open-vocabulary detector (OWLv2, OWL-ViT or Grounding DINO) returning per-box scores and xyxy boxes.

    Boxes are normalised to [0, 1] of the model's input; scores are sigmoid(logits) maxed over the query (OWL)
    or over the query's text tokens (Grounding DINO). Detections below `min_score` are not kept.
    """

    def __init__(self, model_id: str, device="cpu", dtype: str = "float32", min_score: float = 0.01,
                 field: str = "models.detector"):
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        self.device = torch.device(device)
        self.processor = load_pretrained(AutoProcessor.from_pretrained, model_id, field)
        self.model = load_pretrained(AutoModelForZeroShotObjectDetection.from_pretrained, model_id, field,
                                     dtype=_DTYPES[dtype]).to(self.device).eval()
        self.grounding = "grounding" in self.model.config.model_type
        self.min_score = min_score

    @torch.no_grad()
    def detect(self, images, queries: list[str]) -> list[tuple[list[float], list[list[float]]]]:
        if self.grounding:
            text = [q.lower().strip().rstrip(".") + "." for q in queries]
            kw = {"padding": True}
        else:
            text = [[f"a photo of a {q}"] for q in queries]
            # OWL's processor tokenises each image's queries separately: pad all to the text model's length
            kw = {"padding": "max_length", "truncation": True,
                  "max_length": self.model.config.text_config.max_position_embeddings}
        enc = self.processor(images=_rgb(images), text=text, return_tensors="pt", **kw).to(self.device)
        out = self.model(**enc)
        probs = out.logits.float().sigmoid()
        if self.grounding:  # only the query's real text tokens (the model pads logits to max_text_len)
            am = enc["attention_mask"][:, : probs.shape[-1]].bool()
            mask = torch.zeros(probs.shape[0], probs.shape[-1], dtype=torch.bool, device=probs.device)
            mask[:, : am.shape[1]] = am
            probs = probs.masked_fill(~mask[:, None, :], 0)
        scores = probs.max(-1).values  # (B, boxes)
        cx, cy, w, h = out.pred_boxes.float().unbind(-1)
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
        results = []
        for i in range(len(queries)):
            keep = (scores[i] >= self.min_score).nonzero().flatten()
            keep = keep[scores[i, keep].argsort(descending=True)][:200]
            results.append(([round(float(s), 6) for s in scores[i, keep]],
                            [[round(float(v), 6) for v in b] for b in boxes[i, keep]]))
        return results


class CLIPEmbedder:
    """L2-normalised CLIP image and text embeddings (concept alignment and appearance leakage)."""

    def __init__(self, model_id: str, device="cpu", dtype: str = "float32", field: str = "models.clip"):
        from transformers import AutoProcessor, CLIPModel

        self.device = torch.device(device)
        self.processor = load_pretrained(AutoProcessor.from_pretrained, model_id, field)
        self.model = load_pretrained(CLIPModel.from_pretrained, model_id, field,
                                     dtype=_DTYPES[dtype]).to(self.device).eval()

    @torch.no_grad()
    def images(self, images) -> torch.Tensor:
        px = self.processor(images=_rgb(images), return_tensors="pt")["pixel_values"].to(self.device)
        e = _pooled(self.model.get_image_features(pixel_values=px.to(self.model.dtype))).float()
        return torch.nn.functional.normalize(e, dim=-1).cpu()

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        enc = self.processor(text=texts, return_tensors="pt", padding=True, truncation=True).to(self.device)
        e = _pooled(self.model.get_text_features(input_ids=enc["input_ids"],
                                                 attention_mask=enc["attention_mask"])).float()
        return torch.nn.functional.normalize(e, dim=-1).cpu()


class DinoEmbedder:
    """L2-normalised DINOv2 CLS embeddings (image-to-image appearance similarity)."""

    def __init__(self, model_id: str, device="cpu", dtype: str = "float32", field: str = "models.dino"):
        from transformers import AutoImageProcessor, AutoModel

        self.device = torch.device(device)
        self.processor = load_pretrained(AutoImageProcessor.from_pretrained, model_id, field)
        self.model = load_pretrained(AutoModel.from_pretrained, model_id, field,
                                     dtype=_DTYPES[dtype]).to(self.device).eval()

    @torch.no_grad()
    def images(self, images) -> torch.Tensor:
        px = self.processor(images=_rgb(images), return_tensors="pt")["pixel_values"].to(self.device)
        e = self.model(pixel_values=px.to(self.model.dtype)).last_hidden_state[:, 0].float()
        return torch.nn.functional.normalize(e, dim=-1).cpu()
