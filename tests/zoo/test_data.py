"""The offline MNIST-5k split and the Colab-path dataset registry."""
import socket
import threading
import time

import numpy as np
import pytest
import torch

from mixquant_lite.zoo import data


@pytest.mark.slow
def test_split_sizes_and_balance():
    train, test = data.mnist5k("train"), data.mnist5k("test")
    assert len(train) == 4000 and len(test) == 1000
    for ds, per_class in ((train, 400), (test, 100)):
        x, y = ds.tensors
        assert x.shape[1:] == (1, 28, 28) and x.dtype == torch.float32
        assert torch.bincount(y, minlength=10).tolist() == [per_class] * 10


def test_split_is_disjoint_and_covers_all():
    tr, te = data._split_indices()
    assert len(np.intersect1d(tr, te)) == 0
    assert len(np.union1d(tr, te)) == 5000


def test_split_is_deterministic():
    a = data.mnist5k("test").tensors[0]
    data._split_indices.cache_clear()
    b = data.mnist5k("test").tensors[0]
    assert torch.equal(a, b)


def test_normalisation_statistics():
    x = data.mnist5k("train").tensors[0]
    raw = x * data.MNIST_STD + data.MNIST_MEAN
    assert raw.min() >= -1e-6 and raw.max() <= 1 + 1e-6
    assert abs(raw.mean().item() - data.MNIST_MEAN) < 0.002
    assert abs(raw.std().item() - data.MNIST_STD) < 0.002


def test_calibration_batch():
    a, b = data.calibration_batch(128, seed=1), data.calibration_batch(128, seed=1)
    assert a.shape == (128, 1, 28, 28) and torch.equal(a, b)
    assert not torch.equal(a, data.calibration_batch(128, seed=2))
    with pytest.raises(ValueError, match="n must be"):
        data.calibration_batch(0)
    with pytest.raises(ValueError, match="n must be"):
        data.calibration_batch(4001)


def test_loader_and_bad_split():
    x, y = next(iter(data.mnist5k_loader("test", batch_size=64)))
    assert x.shape == (64, 1, 28, 28) and y.shape == (64,)
    with pytest.raises(ValueError, match="split"):
        data.mnist5k("val")
    with pytest.raises(ValueError, match="batch_size"):
        data.mnist5k_loader("test", batch_size=0)


def test_imagenette_offline_fails_fast_with_guidance(tmp_path, no_network):
    t0 = time.perf_counter()
    with pytest.raises(data.DatasetUnavailableError) as e:
        data.imagenette(root=tmp_path)
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert "imagenette2-160.tgz" in msg and "imagenet_folder" in msg
    assert not list(tmp_path.rglob("*.part")), "no half-written file may remain"


def test_download_times_out_instead_of_hanging(tmp_path):
    # A local server that accepts the connection and never answers.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    held = []
    threading.Thread(target=lambda: held.append(srv.accept()), daemon=True).start()
    t0 = time.perf_counter()
    with pytest.raises(data.DatasetUnavailableError, match="could not download"):
        data.download(f"http://127.0.0.1:{port}/x.tgz", tmp_path / "x.tgz", None, timeout=0.5)
    assert time.perf_counter() - t0 < 5
    srv.close()


def test_download_checksum_mismatch(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello")
    with pytest.raises(data.DatasetUnavailableError, match="checksum mismatch"):
        data.download(src.as_uri(), tmp_path / "dst.bin", "0" * 64)
    assert not (tmp_path / "dst.bin").exists()


def _fake_imagenet(root, wnids, n=2):
    from PIL import Image

    for w in wnids:
        (root / w).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (40, 30), (i * 40, 80, 160)).save(root / w / f"{w}_{i}.JPEG")


def test_imagenet_folder_maps_imagenette_labels(tmp_path):
    wnids = sorted(data.IMAGENETTE_WNIDS)
    _fake_imagenet(tmp_path, wnids)
    ds = data.imagenet_folder(tmp_path)
    labels = sorted({ds[i][1] for i in range(len(ds))})
    assert labels == sorted(data.IMAGENETTE_WNIDS.values())
    assert ds[0][0].shape == (3, 224, 224)


def test_imagenette_uses_extracted_folder_offline(tmp_path, no_network):
    _fake_imagenet(tmp_path / "imagenette2-160" / "val", list(data.IMAGENETTE_WNIDS)[:3])
    ds = data.imagenette(root=tmp_path)
    assert len(ds) == 6


def test_imagenet_folder_errors(tmp_path):
    with pytest.raises(data.DatasetUnavailableError, match="does not exist"):
        data.imagenet_folder(tmp_path / "missing")
    _fake_imagenet(tmp_path / "odd", ["cats", "dogs"], n=1)
    with pytest.raises(data.DatasetUnavailableError, match="not 1000"):
        data.imagenet_folder(tmp_path / "odd")
    with pytest.raises(ValueError, match="dataset must be"):
        data.imagenet_loader("cifar10")
