"""Tiny random-weight models of the real architectures, and a tokenizer trained in-process.

They keep the architectures' real code paths (GQA, Qwen2's q/k/v bias, Gemma3's sliding
window, soft-capping and BOS rule, a Llava vision tower) at sizes that export in seconds.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    CLIPVisionConfig,
    Gemma3TextConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

ARCHITECTURES = ("llama", "qwen2", "gemma3")
VOCAB = 384

SENTENCES = (
    "The river flows past the old mill and into the valley below.",
    "Scientists measured the temperature of the lake every morning for a year.",
    "A small library opened in the village square in 1902.",
    "Copper and tin were melted together to make bronze tools.",
    "The orchestra played a symphony written by a young composer.",
    "Migrating birds follow the coast on their way south each autumn.",
    "The bridge was rebuilt after the flood destroyed its wooden pillars.",
    "Farmers planted wheat in the spring and harvested it in late summer.",
)


def corpus_text(sentences: int = 600, seed: int = 0) -> str:
    """Deterministic English-like text: shuffled sentences grouped into paragraphs."""
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(SENTENCES), (sentences,), generator=gen).tolist()
    lines = [SENTENCES[i] for i in picks]
    return "\n\n".join(" ".join(lines[i:i + 5]) for i in range(0, len(lines), 5))


def tiny_tokenizer(adds_bos: bool) -> PreTrainedTokenizerFast:
    """A byte-level BPE of VOCAB ids; `adds_bos` mimics Gemma (BOS by default) vs Llama/SmolLM."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<unk>", "<bos>", "<eos>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([corpus_text()], trainer)
    if adds_bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>", pad_token="<pad>")


def tiny_config(arch: str):
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  bos_token_id=1, eos_token_id=2, pad_token_id=3)
    if arch == "llama":
        return LlamaConfig(**common, tie_word_embeddings=True)
    if arch == "qwen2":
        return Qwen2Config(**common, tie_word_embeddings=False)
    if arch == "gemma3":
        return Gemma3TextConfig(**common, head_dim=16, sliding_window=16,
                                layer_types=["sliding_attention", "full_attention"],
                                final_logit_softcapping=30.0)
    raise ValueError(arch)


def save_tiny_model(arch: str, folder: Path, seed: int = 0) -> Path:
    """Write a tiny random model of `arch` and its tokenizer as a Hugging Face folder."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch)).eval()
    model.save_pretrained(folder)
    tiny_tokenizer(adds_bos=arch == "gemma3").save_pretrained(folder)
    return folder


def tiny_llava() -> LlavaForConditionalGeneration:
    """A Llava-style multimodal model (CLIP vision tower + Llama text model)."""
    torch.manual_seed(0)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, image_size=32, patch_size=8)
    config = LlavaConfig(vision_config=vision, text_config=tiny_config("llama"), image_token_id=4,
                         vision_feature_layer=-1)
    return LlavaForConditionalGeneration(config).eval()
