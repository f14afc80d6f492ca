"""Small model helpers for the notebooks: seeding, looking up a layer, counting weights."""
from __future__ import annotations

import random
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

__all__ = ["seed_everything", "get_layer", "count_weights", "layer_names", "sq_error", "numel_in"]


def seed_everything(seed: int = 0) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_layer(model: nn.Module, name: str) -> nn.Conv2d | nn.Linear:
    """The quantizable layer ``name`` of ``model`` (a ``KeyError`` lists the quantizable names
    when ``name`` is not one of them)."""
    modules = dict(model.named_modules())
    layer = modules.get(name)
    if not isinstance(layer, (nn.Conv2d, nn.Linear)):
        known = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear))]
        raise KeyError(f"model has no layer {name!r} among its quantizable layers {known}")
    return layer


def count_weights(model: nn.Module) -> tuple[int, int]:
    """``(number of quantizable layers, number of their weights)`` (Conv2d and Linear)."""
    names = layer_names(model)
    return len(names), sum(int(get_layer(model, n).weight.numel()) for n in names)


def layer_names(model: nn.Module) -> list[str]:
    """Names of the layers MixQuant quantizes (``qe_table.quantizable_layers``)."""
    from ..layers import quantizable_layers

    out = []
    for item in quantizable_layers(model):
        out.append(item[0] if isinstance(item, tuple) else item)
    return out


def sq_error(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    """``sum((W - W_hat)^2)``: difference in float32, squares summed in float64 (as ``qe``)."""
    d = (w.detach().float() - w_hat.detach().float()).double().reshape(-1)
    return torch.dot(d, d).item()


def numel_in(table, layer: str) -> int:
    """Number of weights of ``layer`` in ``table`` (a mapping or a list in layer order)."""
    n = table.numel
    return int(n[layer] if isinstance(n, Mapping) else n[list(table.layers).index(layer)])

