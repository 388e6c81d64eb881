"""Tiny random evaluator models built from configs (no network): BLIP-2 (T5 or OPT), OWLv2, CLIP, DINOv2.

    path = build_blip2(tmp_path / "blip2", text="t5")   # save_pretrained folder, loadable by models.BlipVqa
"""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("question answer is the a an of photo toy bear car cube frozen in ice melted yes no three four five "
         "cat dog on rope closed eyes , ? : .").split()


def word_tokenizer(bos: bool, eos: bool, extra=("<image>",)):
    """A whitespace WordLevel tokenizer over WORDS (lower-cased), wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<s>", "<unk>", *extra]
    vocab = {t: i for i, t in enumerate(specials + list(WORDS))}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    single = " ".join((["<s>"] if bos else []) + ["$A"] + (["</s>"] if eos else []))
    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>",
                                   unk_token="<unk>", model_max_length=64)


def _dual_tower(vocab: int, max_positions: int, projection_dim: int) -> dict:
    """Text + vision tower settings shared by the tiny CLIP-style models (CLIP, OWL-ViT, OWLv2)."""
    return {
        "text_config": dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                            num_attention_heads=2, max_position_embeddings=max_positions, pad_token_id=0,
                            bos_token_id=2, eos_token_id=1),
        "vision_config": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8),
        "projection_dim": projection_dim,
    }


def build_blip2(path: Path, text: str = "t5", seed: int = 0) -> Path:
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor,
                              OPTConfig, T5Config)

    torch.manual_seed(seed)
    tok = word_tokenizer(bos=(text == "opt"), eos=(text == "t5"))
    vocab = len(tok)
    if text == "t5":
        tcfg = T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
                        num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    else:
        tcfg = OPTConfig(vocab_size=vocab, hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2,
                         word_embed_proj_dim=32, max_position_embeddings=128, pad_token_id=0, bos_token_id=2,
                         eos_token_id=1)
    cfg = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                            encoder_hidden_size=32, vocab_size=vocab),
        text_config=tcfg.to_dict(), num_query_tokens=4, image_token_id=tok.convert_tokens_to_ids("<image>"))
    model = Blip2ForConditionalGeneration(cfg).eval()
    proc = Blip2Processor(BlipImageProcessor(size={"height": 32, "width": 32}), tok, num_query_tokens=4)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path


def _dual_tower_model(path: Path, seed: int, model_cls, config_cls, processor, sizes: tuple[int, int]) -> Path:
    """A tiny CLIP-style (text + vision tower) model and its processor, saved to `path`."""
    torch.manual_seed(seed)
    tok = word_tokenizer(bos=True, eos=True, extra=())
    model = model_cls(config_cls(**_dual_tower(len(tok), *sizes))).eval()
    model.save_pretrained(path)
    processor(tok).save_pretrained(path)
    return path


def build_owlv2(path: Path, seed: int = 0) -> Path:
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    def processor(tok):
        return Owlv2Processor(Owlv2ImageProcessor(size={"height": 32, "width": 32}), tok)

    return _dual_tower_model(path, seed, Owlv2ForObjectDetection, Owlv2Config, processor, (16, 32))


def build_clip(path: Path, seed: int = 0) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    def processor(tok):
        return CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                             tok)

    return _dual_tower_model(path, seed, CLIPModel, CLIPConfig, processor, (32, 16))


def build_dino(path: Path, seed: int = 0) -> Path:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)
    Dinov2Model(cfg).eval().save_pretrained(path)
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                      do_center_crop=True).save_pretrained(path)
    return path


def build_owlvit(path: Path, seed: int = 0) -> Path:
    """OWL-ViT (v1): the same Detector code path as OWLv2, with its own processor."""
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor

    torch.manual_seed(seed)
    tok = word_tokenizer(bos=True, eos=True, extra=())
    cfg = OwlViTConfig(**_dual_tower(len(tok), 16, 32))
    OwlViTForObjectDetection(cfg).eval().save_pretrained(path)
    OwlViTProcessor(OwlViTImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}),
                    tok).save_pretrained(path)
    return path


def build_grounding_dino(path: Path, seed: int = 0) -> Path:
    """Grounding DINO with a tiny Swin backbone and BERT text model (the project's small BERT tokenizer)."""
    from transformers import (BertConfig, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig)

    from lego_inversion.testing import build_bert_tokenizer

    torch.manual_seed(seed)
    tok = build_bert_tokenizer(path / "tokenizer")
    cfg = GroundingDinoConfig(
        backbone_config=SwinConfig(image_size=32, patch_size=4, embed_dim=32, depths=[1, 1], num_heads=[1, 1],
                                   window_size=2, out_features=["stage1", "stage2"]).to_dict(),
        text_config=BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32).to_dict(),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=10, num_feature_levels=2,
        encoder_n_points=2, decoder_n_points=2, max_text_len=16, use_timm_backbone=False,
        use_pretrained_backbone=False)
    GroundingDinoForObjectDetection(cfg).eval().save_pretrained(path)
    GroundingDinoProcessor(GroundingDinoImageProcessor(size={"shortest_edge": 32, "longest_edge": 32}),
                           tok).save_pretrained(path)
    return path
