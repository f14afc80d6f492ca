"""Models: ResNet-20 shapes, the shipped checkpoint (checksum, accuracy), torchvision loader."""
import shutil

import pytest
import torch
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.resnet import BasicBlock

from mixquant_lite import evaluate
from mixquant_lite.zoo.data import mnist5k_loader
from mixquant_lite.zoo.models import (
    CheckpointError,
    PretrainedUnavailableError,
    data_dir,
    load_manifest,
    load_pretrained,
    mobilenetv2_mnist,
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


def test_mobilenetv2_structure_and_shapes():
    m = mobilenetv2_mnist()
    blocks = [mod for mod in m.modules() if isinstance(mod, InvertedResidual)]
    assert len(blocks) == 1 + 2 + 2 + 2 + 1
    assert [b.out_channels for b in blocks] == [16, 24, 24, 32, 32, 64, 64, 96]
    assert sum(b.use_res_connect for b in blocks) == 3  # the repeated blocks at stride 1
    stem = m.features[0][0]
    assert (stem.in_channels, stem.out_channels, stem.stride) == (1, 32, (1, 1))
    depthwise = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d) and mod.groups > 1]
    assert len(depthwise) == 8 and all(d.groups == d.in_channels for d in depthwise)
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert 0.31e6 < sum(p.numel() for p in m.parameters()) < 0.33e6


@pytest.mark.slow
@pytest.mark.parametrize("name, floor", [("resnet20-mnist5k", 0.98),
                                         ("mobilenetv2-mnist5k", 0.97)])
def test_shipped_checkpoint_accuracy_and_manifest(name, floor):
    model = load_pretrained(name)
    acc = evaluate(model, mnist5k_loader("test"))
    assert acc >= floor
    assert acc == pytest.approx(load_manifest()["checkpoints"][name]["test_top1"], abs=1e-4)


@pytest.mark.parametrize("name", ["resnet20-mnist5k", "mobilenetv2-mnist5k"])
def test_tampered_checkpoint_is_refused(tmp_path, name):
    for f in data_dir().iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
    ckpt = tmp_path / f"{name}.pt"
    raw = bytearray(ckpt.read_bytes())
    raw[-100] ^= 0xFF
    ckpt.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="failed its checksum"):
        load_pretrained(name, folder=tmp_path)


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


def test_train_refuses_unknown_model_and_bad_sizes():
    from mixquant_lite.zoo.train import MODELS, train

    assert set(MODELS) == {"resnet20", "mobilenetv2"}
    with pytest.raises(ValueError, match="model_name must be one of"):
        train(model_name="vgg16")
    with pytest.raises(ValueError, match="epochs and batch_size"):
        train(epochs=0, model_name="mobilenetv2")
