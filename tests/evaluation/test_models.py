"""Evaluator models loaded from local folders: yes/no likelihoods, counting, CLIP similarities, load errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lego_inversion.errors import UserError
from lego_inversion.evaluation import models as M


def images(n, seed=0, size=(40, 48)):
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((*size, 3)) * 255).astype("uint8")) for _ in range(n)]


def loss_path_logp(vqa: M.BlipVqa, image, question: str, answer: str) -> float:
    """log p(answer) from the model's own mean cross-entropy loss (an independent route): -loss * #tokens."""
    prompt = f"Question: {question} Answer:"
    tok = vqa.tokenizer
    if vqa.decoder_only:
        enc = vqa.processor(images=[image], text=[prompt + " " + answer], return_tensors="pt")
        k = len(tok(" " + answer, add_special_tokens=False)["input_ids"])
        labels = torch.full_like(enc["input_ids"], -100)
        labels[:, -k:] = enc["input_ids"][:, -k:]
    else:
        enc = vqa.processor(images=[image], text=[prompt], return_tensors="pt")
        labels = tok([answer], return_tensors="pt")["input_ids"]
        k = labels.shape[1]
    with torch.no_grad():
        loss = vqa.model(**enc, labels=labels).loss
    return -float(loss) * k


@pytest.mark.parametrize("kind", ["vqa", "vqa_opt"])
def test_blip2_yes_no_likelihoods(tiny, kind):
    vqa = M.BlipVqa(str(tiny[kind]))
    assert vqa.decoder_only == (kind == "vqa_opt")
    ims = images(3)
    qs = ["Is the toy bear frozen in ice?", "Is the cat melted?", "is a dog on a rope?"]
    batched = vqa.score(ims, qs)
    for im, q, (y, n) in zip(ims, qs, batched):
        assert y == pytest.approx(loss_path_logp(vqa, im, q, "yes"), abs=1e-4)
        assert n == pytest.approx(loss_path_logp(vqa, im, q, "no"), abs=1e-4)
        assert y < 0 and n < 0
        (y1, n1), = vqa.score([im], [q])  # batching does not change an item's score
        assert (y1, n1) == pytest.approx((y, n), abs=1e-4)


def test_nms_and_count_by_hand():
    boxes = [[0, 0, 1, 1], [0, 0, 1, 0.9], [2, 2, 3, 3], [5, 5, 6, 6]]
    scores = [0.9, 0.8, 0.5, 0.2]
    # box 1 overlaps box 0 with IoU 0.9 -> merged at iou 0.5; box 3 is under the 0.3 threshold
    assert M.count_detections(scores, boxes, threshold=0.3, iou=0.5) == 2
    assert M.count_detections(scores, boxes, threshold=0.1, iou=0.5) == 3
    assert M.count_detections(scores, boxes, threshold=0.3, iou=0.95) == 3
    assert M.count_detections(scores, boxes, threshold=0.95, iou=0.5) == 0
    assert M.nms(torch.tensor(boxes, dtype=torch.float64), torch.tensor(scores, dtype=torch.float64), 0.5) == [0, 2, 3]


@pytest.mark.parametrize("kind", ["owlv2", "owlvit"])
def test_detector_scores_match_direct_forward(tiny, tmp_path, kind):
    import tiny_models

    path = tiny["detector"] if kind == "owlv2" else tiny_models.build_owlvit(tmp_path / "owlvit")
    det = M.Detector(str(path), min_score=0.0)
    assert type(det.model).__name__ == {"owlv2": "Owlv2ForObjectDetection", "owlvit": "OwlViTForObjectDetection"}[kind]
    ims = images(2, seed=3)
    out = det.detect(ims, ["toy bear", "cat"])
    enc = det.processor(images=ims, text=[["a photo of a toy bear"], ["a photo of a cat"]], return_tensors="pt",
                        padding="max_length", max_length=det.model.config.text_config.max_position_embeddings)
    with torch.no_grad():
        raw = det.model(**enc)
    for i, (scores, boxes) in enumerate(out):
        direct = sorted(torch.sigmoid(raw.logits[i, :, 0]).tolist(), reverse=True)
        assert scores == pytest.approx(direct[: len(scores)], abs=1e-5)
        assert all(len(b) == 4 and b[0] <= b[2] and b[1] <= b[3] for b in boxes)


def test_clip_similarity_matches_model_logits(tiny):
    emb = M.CLIPEmbedder(str(tiny["clip"]))
    ims = images(2, seed=5)
    texts = ["a photo of a toy bear", "a photo of a cat frozen in ice"]
    sims = emb.images(ims) @ emb.texts(texts).T
    enc = emb.processor(images=ims, text=texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = emb.model(**enc)
    assert torch.allclose(sims, out.logits_per_image / emb.model.logit_scale.exp(), atol=1e-5)


def test_dino_embeddings_are_unit_cls(tiny):
    emb = M.DinoEmbedder(str(tiny["dino"]))
    e = emb.images(images(2, seed=6))
    assert e.shape == (2, 32) and torch.allclose(e.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_model_load_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"models\.vqa = .*no such model folder"):
        M.check_model(str(tmp_path / "missing"), "models.vqa")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="not in the Hugging Face cache"):
        M.check_model("nobody-xyz/not-a-model", "models.clip")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # no network: nothing listens there
    with pytest.raises(UserError, match="cannot be reached"):
        M.check_model("nobody-xyz/not-a-model", "models.clip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"models\.dino = .*not a usable model"):
        M.DinoEmbedder(str(tmp_path / "empty"))


def test_grounding_dino_scores_match_its_post_processing(tmp_path):
    import tiny_models

    det = M.Detector(str(tiny_models.build_grounding_dino(tmp_path / "gdino")), min_score=0.0)
    assert det.grounding
    ims = images(2, seed=4)
    out = det.detect(ims, ["toy bear", "cat"])
    enc = det.processor(images=ims, text=["toy bear.", "cat."], return_tensors="pt", padding=True)
    with torch.no_grad():
        raw = det.model(**enc)
    ref = det.processor.post_process_grounded_object_detection(raw, enc["input_ids"], threshold=0.0,
                                                               text_threshold=0.0)
    for (scores, _), r in zip(out, ref):
        assert scores == pytest.approx(sorted(r["scores"].tolist(), reverse=True), abs=1e-5)
