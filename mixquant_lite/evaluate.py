"""Top-1 accuracy over a DataLoader."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

__all__ = ["evaluate", "model_device"]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-less model)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def correct_mask(model: nn.Module, loader: DataLoader, *, progress: bool = False) -> torch.Tensor:
    """Per-sample correctness of ``model`` on ``loader``: a bool tensor ``(N,)`` in loader order.

    This is what paired tests (McNemar, paired bootstrap) compare between two models scored on
    the same images. Batches are moved to the model's device; the model is put in ``eval()`` mode
    for the pass and its previous mode restored afterwards.

    Raises:
        ValueError: the loader yielded no samples.
    """
    device = model_device(model)
    was_training = model.training
    model.eval()
    parts: list[torch.Tensor] = []
    try:
        for x, y in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
            logits = model(x.to(device))
            parts.append(logits.argmax(1).cpu() == y)
    finally:
        model.train(was_training)
    if not parts or sum(len(p) for p in parts) == 0:
        raise ValueError("loader yielded no samples")
    return torch.cat(parts)


def evaluate(model: nn.Module, loader: DataLoader, *, progress: bool = False) -> float:
    """Top-1 accuracy of ``model`` on ``loader`` as a fraction in [0, 1]
    (the mean of :func:`correct_mask`)."""
    return correct_mask(model, loader, progress=progress).double().mean().item()
