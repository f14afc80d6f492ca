"""The two transformer testbeds behind one interface (for the study and for ``reproduce``).

A :class:`TextTestbed` holds:

- ``model``: what the package quantizes. The package's measures and BRECQ take *float* input
  tensors (images); token ids travel as float (exact below 2**24) and :class:`FloatIds` turns
  them back into int64 ids. Its output is logits, ``(N, classes)`` or ``(N, classes, T)``, so
  the cross-entropy / KL measures (``"hessian"``, ``"fisher"``, ``"output"``) apply unchanged.
- ``calib``: calibration inputs, float token ids ``(N, T)`` without padding (so a transformer
  block can be replayed on its hidden states alone).
- ``evaluate(model)``: per-item outcomes of a (quantized copy of) ``model`` on the held-out
  items, ``{metric: array (n_items,)}``; ``fp32`` holds the full-precision outcomes.
- ``evaluate_items(model, items)``: the same on the items ``items`` only (cheaper; MiniLM:
  only ``cosine``, from the queries' side alone).
- ``metrics``: each metric's kind: ``"correct"`` (per-item right/wrong: exact McNemar) or
  ``"higher"`` / ``"lower"`` (a real number per item, better when higher / lower: paired
  bootstrap over items).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class FloatIds(nn.Module):
    """Float token ids (N, T) -> ``inner(ids.round().long())``.

    Attention runs on PyTorch's "math" SDPA kernel here: the fused CPU kernel has no double
    backward, which the Hessian measure needs (same results up to float rounding).
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):
            return self.inner(x.round().long())


class TokenLogits(nn.Module):
    """A causal LM (ids (N, T) -> logits (N, T, V)) as logits (N, V, T): the class axis second,
    as ``F.cross_entropy`` / ``log_softmax(dim=1)`` expect."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm(ids).transpose(1, 2)


@dataclass
class TextTestbed:
    """A quantization testbed: model, calibration inputs, per-item evaluation (module doc)."""

    name: str
    model: nn.Module
    calib: torch.Tensor
    evaluate: Callable[[nn.Module], dict[str, np.ndarray]]
    metrics: dict[str, str]
    evaluate_items: Callable[[nn.Module, np.ndarray], dict[str, np.ndarray]]
    fp32: dict[str, np.ndarray] = field(default_factory=dict)
    layer_type: Callable[[str], str] = str

    def summary(self, outcomes: dict[str, np.ndarray] | None = None) -> dict[str, float]:
        """Mean of each metric (percent for ``"correct"`` metrics)."""
        outcomes = self.fp32 if outcomes is None else outcomes
        return {k: float(np.mean(v)) * (100.0 if self.metrics[k] == "correct" else 1.0)
                for k, v in outcomes.items()}


def bert_layer_type(name: str) -> str:
    """q / k / v / attn-out / mlp-in / mlp-out (or "other") of a BERT Linear's module path."""
    for key, kind in ((".query", "q"), (".key", "k"), (".value", "v"),
                      ("attention.output.dense", "attn-out"), ("intermediate.dense", "mlp-in"),
                      ("output.dense", "mlp-out")):
        if key in name:
            return kind
    return "other"


def gpt_layer_type(name: str) -> str:
    """q / k / v / attn-out / mlp-in / mlp-out / head of a :class:`CharGPT` layer path."""
    for key, kind in ((".attn.q", "q"), (".attn.k", "k"), (".attn.v", "v"), (".attn.o", "attn-out"),
                      (".fc1", "mlp-in"), (".fc2", "mlp-out"), ("head", "head")):
        if name.endswith(key) or key in name:
            return kind
    return "other"


def minilm_testbed(n_calib: int = 256, calib_length: int = 64, index_fp32: bool = True
                   ) -> TextTestbed:
    """all-MiniLM-L6-v2 on the stdlib retrieval pairs (:mod:`.minilm`).

    ``model`` = ``FloatIds(RetrievalHead(MiniLMEncoder))``; ``evaluate`` encodes every query
    with the given model and ranks the documents of a fixed FP32 index (the documents encoded
    once by the FP32 model: a quantized encoder serving queries against a stored index); it
    returns ``top1``, ``top5`` (correct) and ``cosine`` (of each query's embedding to its FP32
    one, higher is better). ``index_fp32=False`` encodes the documents with the model too.

    Raises:
        PretrainedUnavailableError: the ``text`` extra is not installed.
    """
    from .minilm import (
        MiniLMEncoder,
        RetrievalHead,
        calibration_ids,
        encode,
        load_retrieval,
        load_sentence_transformer,
        retrieval_outcomes,
    )

    st = load_sentence_transformer()
    encoder = MiniLMEncoder(st[0].auto_model).eval()
    data = load_retrieval(st.tokenizer)
    q_ref, d_ref = encode(encoder, data.queries), encode(encoder, data.documents)
    model = FloatIds(RetrievalHead(encoder, d_ref)).eval()

    def evaluate(m: nn.Module) -> dict[str, np.ndarray]:
        enc = m.get_submodule("inner.encoder")
        docs = d_ref if index_fp32 else encode(enc, data.documents)
        return retrieval_outcomes(encode(enc, data.queries), docs, q_ref)

    def evaluate_items(m: nn.Module, items: np.ndarray) -> dict[str, np.ndarray]:
        got = encode(m.get_submodule("inner.encoder"), [data.queries[i] for i in items])
        return {"cosine": F.cosine_similarity(got.double(), q_ref[items].double(), dim=1).numpy()}

    calib = calibration_ids(st.tokenizer, n_calib, calib_length).float()
    bed = TextTestbed("minilm-l6", model, calib, evaluate,
                      {"top1": "correct", "top5": "correct", "cosine": "higher"},
                      evaluate_items, layer_type=bert_layer_type)
    bed.fp32 = retrieval_outcomes(q_ref, d_ref, q_ref)
    return bed


def chargpt_testbed(n_calib: int = 256, seed: int = 0) -> TextTestbed:
    """The shipped character GPT on the held-out 10% of the pydoc corpus (:mod:`.chargpt`).

    ``model`` = ``FloatIds(TokenLogits(CharGPT))``; ``evaluate`` returns ``nll`` (mean nats per
    character of each held-out chunk of ``ctx`` characters, lower is better); perplexity is
    ``exp(mean nll)``. Calibration: ``n_calib`` random training windows.
    """
    from .chargpt import chunk_nll, load_chargpt, load_corpus, train_windows, val_chunks

    gpt = load_chargpt()
    corpus = load_corpus()
    x, y = val_chunks(corpus, gpt.cfg.ctx)
    model = FloatIds(TokenLogits(gpt)).eval()

    def evaluate(m: nn.Module) -> dict[str, np.ndarray]:
        return {"nll": chunk_nll(m.get_submodule("inner.lm"), x, y).numpy()}

    gen = torch.Generator().manual_seed(seed)
    calib = train_windows(corpus, n_calib, gpt.cfg.ctx, gen)[0].float()
    def evaluate_items(m: nn.Module, items: np.ndarray) -> dict[str, np.ndarray]:
        idx = torch.as_tensor(items)
        return {"nll": chunk_nll(m.get_submodule("inner.lm"), x[idx], y[idx]).numpy()}

    bed = TextTestbed("chargpt-pydoc", model, calib, evaluate, {"nll": "lower"},
                      evaluate_items, layer_type=gpt_layer_type)
    bed.fp32 = evaluate(model)
    return bed


def perplexity(nll: np.ndarray) -> float:
    """``exp(mean nats/char)`` of per-chunk NLLs."""
    return math.exp(float(np.mean(nll)))


TESTBEDS: dict[str, Callable[..., TextTestbed]] = {
    "minilm-l6": minilm_testbed,
    "chargpt-pydoc": chargpt_testbed,
}
