"""A small character-level GPT and its offline corpus (Python's own ``pydoc_data`` topics).

The model is a pre-LayerNorm decoder with *separate* ``q``, ``k``, ``v``, ``o`` ``nn.Linear``
layers per block (so every projection is its own quantizable layer), a 4x GELU MLP
(``fc1``/``fc2``), learned positional embeddings and an untied ``head``.

The corpus is the text of ``pydoc_data.topics`` (the help topics that ship with CPython, PSF
licence). Those topics change between Python versions, so the text is frozen once into
``data/pydoc-topics.txt.gz`` (its SHA-256 in ``data/MANIFEST.json`` under ``fixtures``) and
every run reads the frozen copy. Split: the first 90% of characters train, the last 10% are
held out. Held-out perplexity is reported per chunk of ``ctx`` characters so that two models
can be compared with a paired bootstrap over the same chunks.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import register_block
from .models import CheckpointError, data_dir, load_manifest

CORPUS_FILE = "pydoc-topics.txt.gz"
CORPUS_KEY = "pydoc-topics"
TRAIN_FRACTION = 0.9


@dataclass(frozen=True)
class CharGPTConfig:
    """Shape of a :class:`CharGPT` (all sizes in units: tokens, channels, heads)."""

    vocab_size: int
    ctx: int = 128
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        for name in ("vocab_size", "ctx", "n_layer", "n_embd", "n_head", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention with separate ``q``/``k``/``v``/``o`` projections."""

    def __init__(self, cfg: CharGPTConfig) -> None:
        super().__init__()
        d = cfg.n_embd
        self.n_head = cfg.n_head
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (batch, time, n_embd) -> same shape."""
        b, t, d = x.shape
        h = self.n_head

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, t, h, d // h).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)),
                                           is_causal=True)
        return self.o(y.transpose(1, 2).reshape(b, t, d))


class CharGPTBlock(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln1(x))``, then ``x + fc2(gelu(fc1(ln2(x))))``.

    Registered as a BRECQ reconstruction unit (attention and MLP inside one unit).
    """

    def __init__(self, cfg: CharGPTConfig) -> None:
        super().__init__()
        d = cfg.n_embd
        self.ln1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.mlp_ratio * d)
        self.fc2 = nn.Linear(cfg.mlp_ratio * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (batch, time, n_embd) -> same shape."""
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


register_block(CharGPTBlock, ("attn.q", "attn.k", "attn.v", "attn.o", "fc1", "fc2"))


class CharGPT(nn.Module):
    """Character-level GPT: token ids (batch, time) -> logits (batch, time, vocab_size)."""

    def __init__(self, cfg: CharGPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos = nn.Embedding(cfg.ctx, cfg.n_embd)
        self.blocks = nn.Sequential(*[CharGPTBlock(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual outputs
            if name.endswith(("attn.o.weight", "fc2.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.cfg.ctx:
            raise ValueError(f"sequence length must be <= ctx ({self.cfg.ctx}), got {t}")
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        return self.head(self.ln_f(self.blocks(x)))


# ---------------------------------------------------------------------------------- corpus
def _sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def pydoc_topics_text() -> str:
    """The live ``pydoc_data.topics`` text of *this* Python (topics joined in key order)."""
    from pydoc_data.topics import topics

    return "".join(topics[k] for k in sorted(topics))


def freeze_corpus(folder: Path | None = None) -> Path:
    """Write this Python's pydoc topics to ``folder/pydoc-topics.txt.gz``; record its SHA-256.

    Deterministic gzip (mtime 0). Run once by the maintainer; every later run reads the frozen
    file so that results do not depend on the Python version.
    """
    import platform

    folder = folder or data_dir()
    raw = pydoc_topics_text().encode("utf-8")
    blob = gzip.compress(raw, compresslevel=9, mtime=0)
    path = folder / CORPUS_FILE
    path.write_bytes(blob)
    mpath = folder / "MANIFEST.json"
    manifest = json.loads(mpath.read_text()) if mpath.exists() else {}
    manifest.setdefault("fixtures", {})[CORPUS_KEY] = {
        "file": CORPUS_FILE,
        "sha256": _sha256_bytes(blob),
        "chars": len(raw.decode("utf-8")),
        "source": f"pydoc_data.topics of Python {platform.python_version()} (PSF licence)",
        "made_with": "python -c 'from mixquant_lite.zoo.chargpt import freeze_corpus; "
                     "freeze_corpus()'",
    }
    mpath.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def load_fixture_bytes(key: str, folder: Path | None = None) -> bytes:
    """Bytes of the fixture ``key`` of ``MANIFEST.json``'s ``fixtures``, after its SHA-256 check.

    Raises:
        ValueError: unknown ``key``.
        CheckpointError: missing file or checksum mismatch.
    """
    folder = folder or data_dir()
    entries = load_manifest(folder).get("fixtures", {})
    if key not in entries:
        raise ValueError(f"key must be one of {sorted(entries)}, got {key!r}")
    path = folder / entries[key]["file"]
    if not path.is_file():
        raise CheckpointError(f"fixture {path} is missing")
    blob = path.read_bytes()
    got = _sha256_bytes(blob)
    if got != entries[key]["sha256"]:
        raise CheckpointError(f"fixture {path} failed its checksum: expected sha256 "
                              f"{entries[key]['sha256']}, got {got}; restore it with "
                              "`git checkout data/`.")
    return blob


@dataclass(frozen=True)
class CharCorpus:
    """Frozen corpus as token ids: ``train`` and ``val`` (1-D int64), and the ``vocab`` string."""

    vocab: str
    train: torch.Tensor
    val: torch.Tensor

    def encode(self, text: str) -> torch.Tensor:
        """Characters -> ids (1-D int64); raises ValueError on a character not in the vocab."""
        table = {c: i for i, c in enumerate(self.vocab)}
        missing = sorted(set(text) - set(table))
        if missing:
            raise ValueError(f"text has characters outside the vocabulary: {missing[:10]}")
        return torch.tensor([table[c] for c in text], dtype=torch.long)

    def decode(self, ids: torch.Tensor) -> str:
        return "".join(self.vocab[int(i)] for i in ids)


def load_corpus(folder: Path | None = None) -> CharCorpus:
    """The frozen pydoc-topics corpus, split 90/10 (train / held-out) by position."""
    text = gzip.decompress(load_fixture_bytes(CORPUS_KEY, folder)).decode("utf-8")
    vocab = "".join(sorted(set(text)))
    table = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([table[c] for c in text], dtype=torch.long)
    cut = int(TRAIN_FRACTION * len(ids))
    return CharCorpus(vocab=vocab, train=ids[:cut], val=ids[cut:])


def val_chunks(corpus: CharCorpus, ctx: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out text as non-overlapping chunks: inputs and targets, each (n_chunks, ctx) int64.

    Chunk ``i`` predicts characters ``i*ctx+1 .. (i+1)*ctx`` of the held-out text from the ones
    before it inside the chunk; the chunks are the items of the paired bootstrap.
    """
    n = (len(corpus.val) - 1) // ctx
    x = corpus.val[: n * ctx].view(n, ctx)
    y = corpus.val[1 : n * ctx + 1].view(n, ctx)
    return x, y


@torch.no_grad()
def chunk_nll(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              batch_size: int = 64) -> torch.Tensor:
    """Mean negative log-likelihood (nats/char) of each chunk: shape (n_chunks,), float64.

    Perplexity of the whole held-out text is ``exp(chunk_nll(...).mean())`` (chunks are equal
    length).
    """
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size])
        nll = F.cross_entropy(logits.transpose(1, 2), y[i : i + batch_size], reduction="none")
        out.append(nll.mean(dim=1).double())
    return torch.cat(out)


def train_windows(corpus: CharCorpus, n: int, ctx: int, generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random training windows: inputs and next-character targets, each (n, ctx)."""
    start = torch.randint(0, len(corpus.train) - ctx - 1, (n,), generator=generator)
    rows = start[:, None] + torch.arange(ctx)
    return corpus.train[rows], corpus.train[rows + 1]


def load_chargpt(name: str = "chargpt-pydoc", *, folder: Path | None = None) -> CharGPT:
    """Load the shipped character GPT after checking its SHA-256 (``weights_only=True``).

    Raises:
        ValueError: unknown ``name``.
        CheckpointError: missing file or checksum mismatch.
    """
    folder = folder or data_dir()
    entries = load_manifest(folder).get("checkpoints", {})
    if name not in entries or entries[name].get("arch") != "chargpt":
        known = sorted(k for k, v in entries.items() if v.get("arch") == "chargpt")
        raise ValueError(f"name must be one of {known}, got {name!r}")
    entry = entries[name]
    path = folder / entry["file"]
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is missing")
    got = _sha256_bytes(path.read_bytes())
    if got != entry["sha256"]:
        raise CheckpointError(
            f"checkpoint {path} failed its checksum: expected sha256 {entry['sha256']}, got "
            f"{got}. Restore it with `git checkout data/` or retrain with "
            "`python -m mixquant_lite.zoo.train_text`.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = CharGPT(CharGPTConfig(**entry["kwargs"]))
    model.load_state_dict(state)
    return model.eval()


def config_dict(cfg: CharGPTConfig) -> dict:
    """The config as a plain dict (the manifest's ``kwargs``)."""
    return asdict(cfg)
