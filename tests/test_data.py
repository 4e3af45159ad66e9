"""Datasets from real files: counts, shapes, histograms, md5s, and a clear error for every corruption."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct

import numpy as np
import pytest
import torch

from conftest import REPO, require_file
from neurorobust.data import balanced_subset, gaussian_blur, gaussian_noise, load_dataset
from neurorobust.data.idx import read_idx
from neurorobust.data.search import find_folder
from neurorobust.data.synthetic import make_patches, patches_prototypes
from neurorobust.errors import DataError, InvalidParameterError, UnknownNameError

MNIST_TRAIN_HIST = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_HIST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_counts_shapes_histograms():
    ds = load_dataset("mnist")
    assert ds.x_train.shape == (60_000, 1, 28, 28) and ds.x_test.shape == (10_000, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert torch.bincount(ds.y_train).tolist() == MNIST_TRAIN_HIST
    assert torch.bincount(ds.y_test).tolist() == MNIST_TEST_HIST
    assert not ds.approximate


def test_shipped_mnist_is_the_published_file():
    raw = gzip.decompress((REPO / "data/mnist/train-images-idx3-ubyte.gz").read_bytes())
    assert hashlib.md5(raw).hexdigest() == "6bbc9ace898e44ae57da46a324031adb"


def test_mnist_loads_from_repo_without_shared(tmp_path, monkeypatch):
    """A fresh clone without ../shared finds the shipped copy through --data-dir-less search."""
    monkeypatch.delenv("NEURO_DATA", raising=False)
    folder = find_folder("mnist", ("mnist",), ("train-images-idx3-ubyte.gz",), "", None)
    assert folder == REPO / "data" / "mnist"


def _copy_mnist(tmp_path):
    dst = tmp_path / "mnist"
    shutil.copytree(REPO / "data" / "mnist", dst)
    for f in dst.iterdir():
        f.chmod(0o644)
    return dst


def test_truncated_gzip_is_a_clear_error(tmp_path):
    folder = _copy_mnist(tmp_path)
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_idx(path, ndim=3, count=10_000)


def test_wrong_magic_is_a_clear_error(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(struct.pack(">I", 2049) + struct.pack(">I", 3) + b"abc"))
    with pytest.raises(DataError, match="wrong magic number 0x00000801, expected 0x00000803"):
        read_idx(path, ndim=3)


def test_count_mismatch_and_short_data_are_clear_errors(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(struct.pack(">II", 2049, 5) + bytes(5)))
    with pytest.raises(DataError, match="header says 5 items, expected 10000"):
        read_idx(path, ndim=1, count=10_000)
    path.write_bytes(gzip.compress(struct.pack(">II", 2049, 5) + bytes(3)))
    with pytest.raises(DataError, match="3 data bytes but the header"):
        read_idx(path, ndim=1)


def test_md5_mismatch_names_the_file(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(struct.pack(">II", 2049, 2) + bytes([1, 2])))
    with pytest.raises(DataError, match=r"labels\.gz: md5 of the uncompressed content"):
        read_idx(path, ndim=1, md5="0" * 32)


def test_missing_dataset_lists_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURO_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"Looked for .* in: .*nowhere.*apt-get install dataset-fashion-mnist"):
        find_folder(
            "fashion-mnist",
            ("no-such-folder",),
            ("train-images-idx3-ubyte.gz",),
            "Install it with `apt-get install dataset-fashion-mnist`.",
            tmp_path / "nowhere",
        )


def test_data_dir_pointing_at_a_corrupt_copy_fails_cleanly(tmp_path):
    folder = _copy_mnist(tmp_path)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: cannot read"):
        load_dataset("mnist", data_dir=folder)


def test_unknown_dataset_suggests_close_names():
    with pytest.raises(UnknownNameError, match="Did you mean 'mnist'"):
        load_dataset("mnsit")


def test_fashion_mnist_from_debian_package():
    require_file("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", "dataset-fashion-mnist")
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60_000, 1, 28, 28) and ds.x_test.shape == (10_000, 1, 28, 28)
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10
    assert ds.classes[9] == "Ankle boot"


def test_caltech10_counts_and_classes():
    require_file(REPO.parent / "shared/data/caltech10/train_jpeg.bin", "../shared beside the repository")
    ds = load_dataset("caltech10")
    assert ds.x_train.shape == (2433, 3, 128, 128) and ds.x_test.shape == (611, 3, 128, 128)
    assert torch.bincount(ds.y_test).tolist() == [87, 40, 160, 160, 26, 25, 22, 20, 23, 48]
    # car_side (label 5) is all greyscale: identical channels
    cars = ds.x_test[ds.y_test == 5]
    assert torch.equal(cars[:, 0], cars[:, 1]) and torch.equal(cars[:, 1], cars[:, 2])


def test_cifar10_jpeg_copy_is_marked_approximate():
    require_file(REPO.parent / "shared/data/cifar10-jpeg/test_jpeg.bin", "../shared beside the repository")
    ds = load_dataset("cifar10")
    assert ds.approximate
    assert ds.x_train.shape == (50_000, 3, 32, 32) and ds.x_test.shape == (10_000, 3, 32, 32)
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
    means = (ds.x_train.mean(dim=(0, 2, 3)) * 255).tolist()
    assert np.allclose(means, [125.27, 122.93, 113.86], atol=0.3)


def test_patches_are_deterministic_binary_with_25_bright_pixels():
    ds = load_dataset("patches")
    assert ds.x_train.shape == (4000, 1, 10, 10) and ds.num_classes == 4
    assert torch.all(ds.x_train.sum(dim=(1, 2, 3)) == 25)
    assert set(torch.unique(ds.x_train).tolist()) == {0.0, 1.0}
    assert torch.bincount(ds.y_test).tolist() == [250] * 4
    x1, y1 = make_patches(10, seed=5)
    x2, y2 = make_patches(10, seed=5)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    protos = patches_prototypes().reshape(4, -1).astype(int)
    overlap = protos @ protos.T
    assert np.all(np.diag(overlap) == 25) and np.all(overlap[~np.eye(4, dtype=bool)] == 10)


def test_digits_smoke_set():
    ds = load_dataset("digits")
    assert ds.x_train.shape == (1437, 1, 8, 8) and ds.x_test.shape == (360, 1, 8, 8)
    assert ds.x_train.min() >= 0 and ds.x_train.max() <= 1


def test_noise_is_seeded_clipped_and_has_the_right_scale():
    x = torch.full((200, 1, 10, 10), 0.5)
    a = gaussian_noise(x, 0.1, generator=torch.Generator().manual_seed(0))
    b = gaussian_noise(x, 0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert abs(float((a - x).std()) - 0.1) < 0.005
    assert gaussian_noise(x, 5.0).min() >= 0 and gaussian_noise(x, 5.0).max() <= 1
    assert torch.equal(gaussian_noise(x, 0.0), x)
    with pytest.raises(InvalidParameterError, match="'sigma' parameter of gaussian_noise"):
        gaussian_noise(x, -1.0)


def test_blur_preserves_constants_and_spreads_a_point():
    x = torch.full((1, 1, 16, 16), 0.3)
    assert torch.allclose(gaussian_blur(x, 2.0), x, atol=1e-6)
    point = torch.zeros(1, 1, 21, 21)
    point[0, 0, 10, 10] = 1.0
    out = gaussian_blur(point, 1.0)
    assert abs(float(out.sum()) - 1.0) < 1e-5
    # separable Gaussian: the centre holds k0^2 of the mass with k0 = 1/sum(exp(-t^2/2)), t in -2..2
    k0 = 1 / sum(np.exp(-0.5 * t * t) for t in range(-2, 3))
    assert abs(float(out[0, 0, 10, 10]) - k0**2) < 1e-5
    assert torch.equal(gaussian_blur(point, 0.0), point)


def test_balanced_subset_on_class_sorted_labels():
    y = torch.arange(10).repeat_interleave(1000)  # sorted by class, like CIFAR-10's files
    idx = balanced_subset(y, 500, seed=3)
    assert torch.bincount(y[idx]).tolist() == [50] * 10
    assert torch.equal(idx, balanced_subset(y, 500, seed=3))
    assert not torch.equal(idx, balanced_subset(y, 500, seed=4))
    assert torch.equal(idx, idx.sort().values)
    small = torch.tensor([0] * 100 + [1] * 3)
    assert torch.bincount(small[balanced_subset(small, 10)]).tolist() == [7, 3]
