"""Top-1 accuracy over a DataLoader."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

__all__ = ["evaluate", "correct_mask", "accuracy_and_loss", "model_device"]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-less model)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def _scores(
    model: nn.Module, loader: DataLoader, *, progress: bool = False, with_loss: bool = False
) -> tuple[torch.Tensor, float]:
    """One pass: per-sample correctness ``(N,)`` bool in loader order and, with ``with_loss``,
    the summed cross-entropy (nats, float64; 0.0 otherwise). The model is put in ``eval()``
    mode for the pass and its previous mode restored; batches go to the model's device.

    Raises:
        ValueError: the loader yielded no samples.
    """
    device = model_device(model)
    was_training = model.training
    model.eval()
    parts: list[torch.Tensor] = []
    loss = 0.0
    try:
        for x, y in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
            logits = model(x.to(device)).float().cpu()
            parts.append(logits.argmax(1) == y)
            if with_loss:
                loss += torch.nn.functional.cross_entropy(
                    logits.double(), y, reduction="sum").item()
    finally:
        model.train(was_training)
    if not parts or sum(len(p) for p in parts) == 0:
        raise ValueError("loader yielded no samples")
    return torch.cat(parts), loss


def correct_mask(model: nn.Module, loader: DataLoader, *, progress: bool = False) -> torch.Tensor:
    """Per-sample correctness of ``model`` on ``loader``: a bool tensor ``(N,)`` in loader order.

    This is what paired tests (McNemar, paired bootstrap) compare between two models scored on
    the same images. Batches are moved to the model's device; the model is put in ``eval()`` mode
    for the pass and its previous mode restored afterwards.

    Raises:
        ValueError: the loader yielded no samples.
    """
    return _scores(model, loader, progress=progress)[0]


def evaluate(model: nn.Module, loader: DataLoader, *, progress: bool = False) -> float:
    """Top-1 accuracy of ``model`` on ``loader`` as a fraction in [0, 1]
    (the mean of :func:`correct_mask`)."""
    return correct_mask(model, loader, progress=progress).double().mean().item()


def accuracy_and_loss(
    model: nn.Module, loader: DataLoader, *, progress: bool = False
) -> tuple[float, float]:
    """Top-1 accuracy (fraction, as :func:`evaluate`) and mean cross-entropy (nats per image)
    in one pass. The loss is a finer measure of damage than accuracy on a small test set."""
    mask, loss = _scores(model, loader, progress=progress, with_loss=True)
    return mask.double().mean().item(), loss / len(mask)
