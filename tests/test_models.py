"""Models: ResNet-20 shapes, the shipped checkpoint (checksum, accuracy), torchvision loader."""
import shutil

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from mixquant_lite import evaluate
from mixquant_lite.data import mnist5k_loader
from mixquant_lite.models import (
    CheckpointError,
    PretrainedUnavailableError,
    data_dir,
    load_pretrained,
    resnet20,
    torchvision_resnet,
)


def test_resnet20_structure_and_shapes():
    m = resnet20()
    blocks = [mod for mod in m.modules() if isinstance(mod, BasicBlock)]
    assert len(blocks) == 9
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)]
    assert len(convs) == 1 + 9 * 2 + 2  # stem, 2 per block, 2 projection shortcuts
    assert [b.conv2.out_channels for b in blocks] == [16] * 3 + [32] * 3 + [64] * 3
    assert m(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    assert 0.26e6 < sum(p.numel() for p in m.parameters()) < 0.28e6


@pytest.mark.slow
def test_shipped_checkpoint_accuracy():
    model = load_pretrained("resnet20-mnist5k")
    acc = evaluate(model, mnist5k_loader("test"))
    assert acc >= 0.98


def test_tampered_checkpoint_is_refused(tmp_path):
    for f in data_dir().iterdir():
        shutil.copy(f, tmp_path / f.name)
    ckpt = tmp_path / "resnet20-mnist5k.pt"
    raw = bytearray(ckpt.read_bytes())
    raw[-100] ^= 0xFF
    ckpt.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="failed its checksum"):
        load_pretrained("resnet20-mnist5k", folder=tmp_path)


def test_missing_checkpoint_and_unknown_name(tmp_path):
    shutil.copy(data_dir() / "MANIFEST.json", tmp_path / "MANIFEST.json")
    with pytest.raises(CheckpointError, match="missing"):
        load_pretrained("resnet20-mnist5k", folder=tmp_path)
    with pytest.raises(ValueError, match="name must be one of"):
        load_pretrained("resnet56-cifar")


def test_torchvision_random_and_bad_name():
    m = torchvision_resnet("resnet18", pretrained=False)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    with pytest.raises(ValueError, match="name must be one of"):
        torchvision_resnet("vgg16")


def test_torchvision_pretrained_offline_never_falls_back(tmp_path, monkeypatch, no_network):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(PretrainedUnavailableError, match="pretrained=False"):
        torchvision_resnet("resnet18", pretrained=True)
