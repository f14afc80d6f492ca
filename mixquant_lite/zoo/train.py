"""Train a shipped MNIST-5k model and write its checkpoint and manifest entry.

    OMP_NUM_THREADS=1 python -m mixquant_lite.zoo.train  # ResNet-20, 20 epochs, ~5-9 min, 2 cores
    python -m mixquant_lite.zoo.train --model mobilenetv2 --epochs 9 --batch-size 64

Seeded (torch, numpy), single process. Augmentation: random shifts of up to 2 pixels (crop of
a background-padded image). SGD with momentum 0.9, Nesterov, weight decay 5e-4, one-cycle
cosine learning rate peaking at 0.1, batch 128 (ResNet-20) or as given.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..evaluation import evaluate
from .data import mnist5k, mnist5k_loader
from .models import data_dir, mobilenetv2_mnist, resnet20, save_checkpoint

# --model value -> (architecture key in the manifest, builder, default checkpoint name)
MODELS = {
    "resnet20": ("resnet20", resnet20, "resnet20-mnist5k"),
    "mobilenetv2": ("mobilenetv2_mnist", mobilenetv2_mnist, "mobilenetv2-mnist5k"),
}


def _random_shift(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Shift each image by up to ``pad`` pixels in x and y (zeros = normalised background)."""
    n, _, h, w = x.shape
    bg = x.amin().item()  # the normalised value of a black pixel
    xp = F.pad(x, (pad, pad, pad, pad), value=bg)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (n, h, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (n, 1, w)
    return xp[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)


def train(epochs: int = 20, seed: int = 0, lr: float = 0.1, batch_size: int = 128,
          model_name: str = "resnet20") -> tuple[torch.nn.Module, float]:
    """Train ``model_name`` (a key of :data:`MODELS`); return ``(model, test_accuracy)``."""
    if model_name not in MODELS:
        raise ValueError(f"model_name must be one of {sorted(MODELS)}, got {model_name!r}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    torch.manual_seed(seed)
    np.random.seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = mnist5k("train").tensors
    model = MODELS[model_name][1]()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for _ in tqdm(range(epochs), desc="epochs"):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(model(_random_shift(x[idx], gen)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model, evaluate(model, mnist5k_loader("test"))


def _command(args: argparse.Namespace) -> str:
    cmd = "python -m mixquant_lite.zoo.train"
    if args.model != "resnet20":
        cmd += f" --model {args.model}"
    cmd += f" --epochs {args.epochs}"
    if args.batch_size != 128:
        cmd += f" --batch-size {args.batch_size}"
    return cmd + f" --seed {args.seed}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), default="resnet20")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=data_dir())
    ap.add_argument("--name", default=None, help="checkpoint name (default: <model>-mnist5k)")
    args = ap.parse_args(argv)
    arch, _, default_name = MODELS[args.model]
    args.name = args.name or default_name
    t0 = time.perf_counter()
    model, acc = train(args.epochs, args.seed, batch_size=args.batch_size,
                       model_name=args.model)
    seconds = time.perf_counter() - t0
    path = save_checkpoint(model, args.out, args.name, {
        "arch": arch,
        "test_top1": round(acc, 4),
        "trained_with": _command(args),
        "train_seconds": round(seconds, 1),
        "torch": torch.__version__,
    })
    print(f"test top-1 {acc:.4f}; {seconds:.0f} s; wrote {path}")


if __name__ == "__main__":
    main()
