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
def evaluate(model: nn.Module, loader: DataLoader, *, progress: bool = False) -> float:
    """Top-1 accuracy of ``model`` on ``loader`` as a fraction in [0, 1].

    Batches are moved to the model's device; the model is put in ``eval()`` mode for the pass and
    its previous mode restored afterwards.
    """
    device = model_device(model)
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for x, y in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
            logits = model(x.to(device))
            correct += (logits.argmax(1).cpu() == y).sum().item()
            total += y.numel()
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("loader yielded no samples")
    return correct / total
