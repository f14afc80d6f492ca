"""Testbeds: a model with its calibration images and evaluation loader, ready to quantize.

:func:`testbed` builds one: the shipped MNIST-5k checkpoints (``resnet20-mnist5k``,
``mobilenetv2-mnist5k``) with the MNIST-5k splits, or a torchvision ResNet with Imagenette or an
ImageNet folder. ``pretrained=False`` gives seeded random weights (tests only).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["Testbed", "testbed", "testbed_stem", "MNIST_MODELS"]

# Offline models: name accepted -> (checkpoint in data/, builder name in zoo/models.py for tests)
_MNIST = {"resnet20-mnist5k": ("resnet20-mnist5k", "resnet20"),
          "resnet20": ("resnet20-mnist5k", "resnet20"),
          "mobilenetv2-mnist5k": ("mobilenetv2-mnist5k", "mobilenetv2_mnist"),
          "mobilenetv2": ("mobilenetv2-mnist5k", "mobilenetv2_mnist")}
MNIST_MODELS = tuple(_MNIST)


@dataclass
class Testbed:
    """A model, its calibration images ``(N, C, H, W)``, its evaluation loader, and the tags and
    descriptions recorded in provenance."""

    model: nn.Module
    calib: torch.Tensor
    loader: torch.utils.data.DataLoader
    model_tag: str
    dataset_tag: str
    eval_desc: str
    calib_desc: str


def mnist_testbed(model_name: str, pretrained: bool, n_calib: int, seed: int,
                 batch_size: int) -> Testbed:
    from . import models
    from .data import calibration_batch, mnist5k_loader

    if model_name not in _MNIST:
        raise ValueError(
            f"dataset 'mnist5k' goes with one of the models {sorted(_MNIST)}, got {model_name!r}"
        )
    tag, builder = _MNIST[model_name]
    if pretrained:
        model = models.load_pretrained(tag)
    else:  # random weights (tests only), seeded without touching the global generator
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = getattr(models, builder)().eval()
    return Testbed(
        model=model, calib=calibration_batch(n_calib, seed), model_tag=tag,
        loader=mnist5k_loader("test", batch_size=batch_size), dataset_tag="mnist5k",
        eval_desc="MNIST-5k test split (1,000 images)",
        calib_desc=f"{n_calib} MNIST-5k training images (seed {seed})",
    )


def _stack(ds, idx: list[int]) -> torch.Tensor:
    return torch.stack([ds[i][0] for i in idx])


def imagenet_testbed(model_name: str, dataset: str, pretrained: bool, n_calib: int, seed: int,
                    batch_size: int, workers: int, image_size: int) -> Testbed:
    from torch.utils.data import DataLoader, Subset

    from .data import imagenet_folder, imagenet_transform, imagenette
    from .models import TORCHVISION_RESNETS, torchvision_resnet

    if model_name not in TORCHVISION_RESNETS:
        raise ValueError(
            f"dataset {dataset!r} goes with a torchvision ResNet {TORCHVISION_RESNETS}, "
            f"got {model_name!r}"
        )
    transform = imagenet_transform(resize=round(image_size * 256 / 224), crop=image_size)
    gen = torch.Generator().manual_seed(seed)
    if dataset.startswith("imagenet:"):
        root = Path(dataset.split(":", 1)[1]).expanduser()
        val = imagenet_folder(root, transform=transform)
        train_root = root.parent / "train"
        if root.name == "val" and train_root.is_dir():
            calib_ds, eval_ds = imagenet_folder(train_root, transform=transform), val
            calib_desc = f"{n_calib} images of {train_root} (seed {seed})"
        else:
            # Only one folder: calibrate on a seeded sample of it and evaluate on the rest.
            perm = torch.randperm(len(val), generator=gen).tolist()
            if len(val) <= n_calib:
                raise ValueError(f"{root} has {len(val)} images; need more than n_calib={n_calib}")
            calib_ds, eval_ds = Subset(val, perm[:n_calib]), Subset(val, perm[n_calib:])
            calib_desc = f"{n_calib} images of {root} (seed {seed}), excluded from evaluation"
        dataset_tag, eval_desc = "imagenet", f"{root} ({len(eval_ds)} images)"
    elif dataset in ("imagenette", "imagenette-160", "imagenette-320"):
        size = dataset.rsplit("-", 1)[1] if "-" in dataset else "160"
        eval_ds = imagenette(size, "val", transform=transform)
        calib_ds = imagenette(size, "train", transform=transform)
        dataset_tag = "imagenette"
        eval_desc = f"Imagenette-{size} val ({len(eval_ds)} images, ImageNet labels)"
        calib_desc = f"{n_calib} Imagenette-{size} training images (seed {seed})"
    else:
        raise ValueError(
            "dataset must be 'mnist5k', 'imagenette', 'imagenette-320' or 'imagenet:/path/to/val', "
            f"got {dataset!r}"
        )
    if len(calib_ds) < n_calib:
        raise ValueError(f"the calibration set has {len(calib_ds)} images, n_calib={n_calib}")
    idx = torch.randperm(len(calib_ds), generator=gen)[:n_calib].tolist()
    with torch.random.fork_rng(devices=[]):  # random weights (tests) seeded, globals untouched
        torch.manual_seed(seed)
        model = torchvision_resnet(model_name, pretrained=pretrained)
    return Testbed(
        model=model, calib=_stack(calib_ds, idx),
        loader=DataLoader(eval_ds, batch_size=batch_size, shuffle=False, num_workers=workers),
        model_tag=model_name, dataset_tag=dataset_tag, eval_desc=eval_desc, calib_desc=calib_desc,
    )



def testbed(model_name: str, dataset: str, *, pretrained: bool, n_calib: int, seed: int,
            batch_size: int, workers: int = 2, image_size: int = 224) -> Testbed:
    """The testbed of ``model_name`` on ``dataset`` (``"mnist5k"``, ``"imagenette"``,
    ``"imagenette-320"`` or ``"imagenet:/path/to/val"``); see :func:`mnist_testbed` and
    :func:`imagenet_testbed`."""
    if dataset == "mnist5k":
        return mnist_testbed(model_name, pretrained, n_calib, seed, batch_size)
    return imagenet_testbed(model_name, dataset, pretrained, n_calib, seed, batch_size, workers,
                            image_size)


def testbed_stem(model_name: str, dataset: str) -> str:
    """``<dataset tag>-<model tag>``, the file stem a testbed's results are written under."""
    model_tag = _MNIST[model_name][0] if model_name in _MNIST else model_name
    if dataset.startswith("imagenet:"):
        dataset_tag = "imagenet"
    elif dataset.startswith("imagenette"):
        dataset_tag = "imagenette"
    else:
        dataset_tag = dataset
    return f"{dataset_tag}-{model_tag}"
