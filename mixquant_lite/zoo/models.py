"""Models: the offline ResNet-20 and MobileNetV2 for MNIST-5k, torchvision ResNets for Colab.

ResNet-20 (He et al. 2016, CIFAR variant: 3 stages x 3 basic blocks, 16/32/64 channels) is
assembled from torchvision's :class:`~torchvision.models.resnet.BasicBlock` and keeps
torchvision's attribute names (``conv1``, ``bn1``, ``layer1..3``, ``fc``), so the quantization
and BRECQ code has one block-handling path for it and for ``torchvision.models.resnet*``.
Differences from the CIFAR original: 1 input channel (28x28 digits) and 1x1-conv projection
shortcuts (torchvision's ``downsample``) instead of zero padding.

MobileNetV2 (Sandler et al. 2018) is torchvision's own :class:`~torchvision.models.MobileNetV2`
built from its :class:`~torchvision.models.mobilenetv2.InvertedResidual` blocks, shrunk for
1x28x28 digits: five inverted-residual stages (expansion t, channels c, repeats n, stride s)
``[1,16,1,1], [6,24,2,2], [6,32,2,2], [6,64,2,1], [6,96,1,1]`` and the stem replaced by a
stride-1 ``Conv2d(1, 32, 3)``, so a 28x28 image ends at 7x7 before the 1x1 head conv (1280
channels) and the classifier. About 0.32 M parameters; its depthwise 3x3 convolutions (few
weights, wide per-channel ranges) are the layers where per-tensor low-bit grids hurt most.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torchvision.models.mobilenetv2 import MobileNetV2
from torchvision.models.resnet import BasicBlock

from ..packing import register_architecture

__all__ = [
    "ResNet20",
    "resnet20",
    "mobilenetv2_mnist",
    "MOBILENETV2_MNIST_SETTING",
    "load_pretrained",
    "torchvision_resnet",
    "TORCHVISION_RESNETS",
    "CheckpointError",
    "PretrainedUnavailableError",
    "data_dir",
    "save_checkpoint",
]

TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, or its SHA-256 does not match the manifest."""


class PretrainedUnavailableError(RuntimeError):
    """Pretrained weights were asked for and could not be had (never replaced by random ones)."""


class ResNet20(nn.Module):
    """CIFAR-style ResNet-20: input ``(N, in_channels, H, W)``, logits ``(N, num_classes)``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(width, stride=1)
        self.layer2 = self._stage(2 * width, stride=2)
        self.layer3 = self._stage(4 * width, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _stage(self, planes: int, stride: int, blocks: int = 3) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet20(num_classes: int = 10, in_channels: int = 1) -> ResNet20:
    """A randomly initialised :class:`ResNet20`."""
    return ResNet20(num_classes=num_classes, in_channels=in_channels)


def _resnet20_fitting(state: Mapping[str, torch.Tensor]) -> ResNet20:
    """A :class:`ResNet20` with the input channels and classes of ``state``."""
    conv1, fc = state.get("conv1.weight"), state.get("fc.weight")
    return resnet20(num_classes=10 if fc is None else fc.shape[0],
                    in_channels=1 if conv1 is None else conv1.shape[1])


register_architecture("resnet20", ResNet20, _resnet20_fitting)


MOBILENETV2_MNIST_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 2, 2),
    (6, 64, 2, 1),
    (6, 96, 1, 1),
)
"""Inverted-residual stages ``(t, c, n, s)`` of the small MobileNetV2 (torchvision's format)."""


def mobilenetv2_mnist(num_classes: int = 10, in_channels: int = 1) -> MobileNetV2:
    """A randomly initialised small torchvision ``MobileNetV2`` for ``(N, in_channels, 28, 28)``.

    torchvision's model with :data:`MOBILENETV2_MNIST_SETTING` and its stride-2 RGB stem conv
    replaced by a stride-1 ``Conv2d(in_channels, 32, 3, padding=1)`` (Kaiming-normal init, as
    torchvision initialises its convs). Returns logits ``(N, num_classes)``.
    """
    model = MobileNetV2(
        num_classes=num_classes,
        inverted_residual_setting=[list(r) for r in MOBILENETV2_MNIST_SETTING],
    )
    stem = nn.Conv2d(in_channels, 32, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(stem.weight, mode="fan_out")
    model.features[0][0] = stem
    return model


def data_dir() -> Path:
    """Folder holding the shipped checkpoints and ``MANIFEST.json``.

    ``$MIXQUANT_LITE_DATA`` if set, else the repository's ``data/`` (the package is installed
    from a clone, editable, locally and in Colab).
    """
    env = os.environ.get("MIXQUANT_LITE_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_manifest(folder: Path | None = None) -> dict:
    folder = folder or data_dir()
    path = folder / "MANIFEST.json"
    if not path.is_file():
        raise CheckpointError(f"no manifest at {path}; is the repository's data/ folder present?")
    return json.loads(path.read_text())


_ARCHS = {"resnet20": resnet20, "mobilenetv2_mnist": mobilenetv2_mnist}


def save_checkpoint(model: nn.Module, folder: Path, name: str, entry: dict) -> Path:
    """Write ``model``'s state dict to ``folder/<name>.pt`` (atomically: a ``.part`` file
    renamed) and record it in ``folder/MANIFEST.json`` under ``name`` as ``entry`` plus its
    ``file`` and ``sha256`` (what :func:`load_pretrained` checks). Returns the checkpoint path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pt"
    tmp = folder / f"{name}.pt.part"
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    mpath = folder / "MANIFEST.json"
    manifest = json.loads(mpath.read_text()) if mpath.exists() else {}
    manifest.setdefault("checkpoints", {})[name] = {"file": path.name, **entry,
                                                    "sha256": _sha256(path)}
    mpath.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def load_pretrained(name: str = "resnet20-mnist5k", *, folder: Path | None = None) -> nn.Module:
    """Load a shipped checkpoint by name, after checking its SHA-256 against the manifest.

    The file is read with ``torch.load(weights_only=True)`` (no pickled code runs). Returns the
    model in ``eval()`` mode on the CPU.

    Raises:
        ValueError: unknown ``name`` (the message lists the known ones).
        CheckpointError: missing file or checksum mismatch.
    """
    manifest = load_manifest(folder)
    entries = manifest.get("checkpoints", {})
    if name not in entries:
        raise ValueError(f"name must be one of {sorted(entries)}, got {name!r}")
    entry = entries[name]
    path = (folder or data_dir()) / entry["file"]
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is missing")
    got = _sha256(path)
    if got != entry["sha256"]:
        raise CheckpointError(
            f"checkpoint {path} failed its checksum: expected sha256 {entry['sha256']}, got {got}. "
            "The file is corrupt or was modified; restore it with `git checkout data/` or retrain "
            "with `python -m mixquant_lite.zoo.train`."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = _ARCHS[entry["arch"]](**entry.get("kwargs", {}))
    model.load_state_dict(state)
    return model.eval()


def torchvision_resnet(name: str, pretrained: bool = True) -> nn.Module:
    """A torchvision ResNet (``resnet18/34/50/101/152``) in ``eval()`` mode.

    With ``pretrained=True`` the ImageNet ``IMAGENET1K_V1`` weights are loaded (downloaded once
    into torch's hub cache). If they cannot be had, :class:`PretrainedUnavailableError` is raised:
    never a silent fallback to random weights.
    """
    import torchvision

    if name not in TORCHVISION_RESNETS:
        raise ValueError(f"name must be one of {TORCHVISION_RESNETS}, got {name!r}")
    builder = getattr(torchvision.models, name)
    if not pretrained:
        return builder(weights=None).eval()
    weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    try:
        return builder(weights=weights).eval()
    except Exception as e:  # urllib / socket / hash errors all mean "no pretrained weights"
        raise PretrainedUnavailableError(
            f"pretrained weights for {name} ({weights.url}) could not be loaded "
            f"({type(e).__name__}: {e}). They are downloaded into torch's hub cache "
            f"({torch.hub.get_dir()}); without network access place the file there, or pass "
            "pretrained=False to use random weights knowingly."
        ) from None
