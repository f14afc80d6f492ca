"""Train the shipped character-level GPT on the frozen pydoc-topics corpus.

    OMP_NUM_THREADS=1 python -m mixquant_lite.zoo.train_text   # 2,200 steps: 805 s of CPU

Seeded (torch), single thread, single process. AdamW (betas 0.9/0.95, weight decay 0.1 on the
matrices only), linear warm-up then cosine decay of the learning rate, batch of random
``ctx``-character windows of the training 90%. Writes ``data/chargpt-pydoc.pt`` and its manifest
entry (SHA-256, held-out loss and perplexity, seconds, the command).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .chargpt import (
    CharGPT,
    CharGPTConfig,
    chunk_nll,
    config_dict,
    load_corpus,
    train_windows,
    val_chunks,
)
from .models import data_dir, save_checkpoint


def train(steps: int, seed: int = 0, lr: float = 3e-3, batch_size: int = 32,
          cfg_kwargs: dict | None = None, log_every: int = 100) -> tuple[CharGPT, list[dict]]:
    """Train a :class:`CharGPT` for ``steps`` steps; return ``(model, log)``.

    ``log`` holds one dict per ``log_every`` steps: step, mean training loss (nats/char), seconds.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    corpus = load_corpus()
    cfg = CharGPTConfig(vocab_size=len(corpus.vocab), **(cfg_kwargs or {}))
    model = CharGPT(cfg)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    log, running, t0 = [], 0.0, time.perf_counter()
    model.train()
    for step in range(steps):
        x, y = train_windows(corpus, batch_size, cfg.ctx, gen)
        loss = F.cross_entropy(model(x).transpose(1, 2), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running += loss.item()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            n = (step % log_every) + 1
            log.append({"step": step + 1, "train_loss": round(running / n, 4),
                        "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(log[-1]), flush=True)
            running = 0.0
    return model.eval(), log


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=2200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=data_dir())
    ap.add_argument("--name", default="chargpt-pydoc")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    model, log = train(args.steps, args.seed, args.lr, args.batch_size)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    x, y = val_chunks(load_corpus(), model.cfg.ctx)
    val = float(chunk_nll(model, x, y).mean())
    cmd = (f"python -m mixquant_lite.zoo.train_text --steps {args.steps} --batch-size "
           f"{args.batch_size} --lr {args.lr} --seed {args.seed}")
    path = save_checkpoint(model, args.out, args.name, {
        "arch": "chargpt",
        "kwargs": config_dict(model.cfg),
        "params": sum(p.numel() for p in model.parameters()),
        "val_loss_nats_per_char": round(val, 4),
        "val_perplexity": round(math.exp(val), 3),
        "final_train_loss": log[-1]["train_loss"],
        "trained_with": cmd,
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu, 1),
        "torch": torch.__version__,
    })
    print(f"held-out {val:.4f} nats/char (perplexity {math.exp(val):.3f}); {seconds:.0f} s "
          f"({cpu:.0f} s CPU); wrote {path}")


if __name__ == "__main__":
    main()
