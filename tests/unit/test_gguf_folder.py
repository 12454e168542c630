"""The streaming GGUF converter against transformers' own GGUF loader and an HF model written out by hand."""

import json

import numpy as np
import pytest
import torch

from freeact_export.errors import UserError
from freeact_export.gguf_folder import INDEX_NAME, convert_gguf

gguf = pytest.importorskip("gguf")

HIDDEN, HEADS, KV_HEADS, FFN, LAYERS, VOCAB = 64, 4, 2, 96, 2, 40


def _llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order (convert_hf_to_gguf.py): each head's rotary halves interleaved."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _reference_model(tied: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, rms_norm_eps=1e-5,
                         max_position_embeddings=128, tie_word_embeddings=tied)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
    return model


def _write_gguf(path, model, kind=None) -> None:
    """The model as a llama GGUF; `kind` quantises the 2-D weights (F32 when None)."""
    from gguf.quants import quantize

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("gpt2")
    tokens = [chr(ord("a") + i % 26) * (1 + i // 26) for i in range(VOCAB)]
    writer.add_token_list(tokens)
    writer.add_token_types([1] * VOCAB)
    writer.add_token_merges(["a a"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    parts = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for i in range(LAYERS):
        for hf, short in parts.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{short}.weight"
    for hf_name, tensor in model.named_parameters():  # a tied lm_head is listed once, as the embedding
        w = tensor.detach().numpy().astype(np.float32)
        if "q_proj" in hf_name:
            w = _llama_cpp_permute(w, HEADS)
        elif "k_proj" in hf_name:
            w = _llama_cpp_permute(w, KV_HEADS)
        if kind is not None and w.ndim == 2:
            writer.add_tensor(names[hf_name], quantize(w, kind), raw_dtype=kind)
        else:
            writer.add_tensor(names[hf_name], w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _converted(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = json.loads((folder / INDEX_NAME).read_text())
    tensors = {}
    for file in sorted(set(index["weight_map"].values())):
        tensors.update(load_file(str(folder / file)))
    assert set(tensors) == set(index["weight_map"])
    return tensors


@pytest.mark.parametrize("tied", [True, False])
def test_float_gguf_converts_back_to_the_hf_weights_exactly(tmp_path, tied):
    model = _reference_model(tied)
    _write_gguf(tmp_path / "m.gguf", model)
    out = tmp_path / "out"
    out.mkdir()
    assert convert_gguf(tmp_path / "m.gguf", out, shard_bytes=40_000, progress=False) == torch.float32
    tensors = _converted(out)
    assert len(set(json.loads((out / INDEX_NAME).read_text())["weight_map"].values())) > 2  # sharded
    expected = {n: p for n, p in model.named_parameters()}
    assert set(tensors) == set(expected)
    for name, p in expected.items():
        assert torch.equal(tensors[name], p.detach()), name
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = torch.arange(VOCAB).reshape(2, -1)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_quantized_gguf_matches_transformers_loader_in_16_bit_storage(tmp_path):
    from transformers import AutoModelForCausalLM

    _write_gguf(tmp_path / "q.gguf", _reference_model(False), kind=gguf.GGMLQuantizationType.Q8_0)
    out = tmp_path / "out"
    out.mkdir()
    # exact_bytes=0 takes the large-model rule: quantised blocks carry fp16 scales, so float16 storage
    assert convert_gguf(tmp_path / "q.gguf", out, exact_bytes=0, progress=False) == torch.float16
    peer = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="q.gguf", dtype=torch.float32)
    tensors = _converted(out)
    reference = {n: p.detach() for n, p in peer.named_parameters()}
    assert set(tensors) == set(reference)
    for name, tensor in reference.items():
        assert tensors[name].dtype == torch.float16
        assert torch.equal(tensors[name], tensor.to(torch.float16)), name


def test_a_truncated_gguf_is_refused_with_one_line(tmp_path):
    _write_gguf(tmp_path / "m.gguf", _reference_model(True))
    data = (tmp_path / "m.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UserError, match="cut.gguf") as err:
        convert_gguf(tmp_path / "cut.gguf", out, progress=False)
    assert "\n" not in str(err.value)
