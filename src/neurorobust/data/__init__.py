"""Datasets as tensors in [0, 1], found on disk in a fixed search order and checked (DESIGN §4).

Every loader returns a :class:`Dataset` with ``x_train``/``x_test`` as float32 tensors of
shape (N, C, H, W) in [0, 1] and ``y_train``/``y_test`` as int64 tensors. Loaded datasets are
memoised per process. The registry ``DATASETS`` maps names to loaders; ``load_dataset(name)``
is the one entry point.

Examples
--------
>>> from neurorobust.data import load_dataset
>>> ds = load_dataset("digits")
>>> tuple(ds.x_train.shape[1:]), ds.num_classes
((1, 8, 8), 10)
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..registry import Registry
from .distortions import DISTORTIONS, gaussian_blur, gaussian_noise
from .idx import read_idx
from .jpegbin import read_jpeg_split
from .search import find_folder, search_roots
from .subsets import balanced_subset
from .synthetic import make_patches

__all__ = [
    "DATASETS",
    "DISTORTIONS",
    "Dataset",
    "DatasetInfo",
    "balanced_subset",
    "gaussian_blur",
    "gaussian_noise",
    "load_dataset",
    "locate_dataset",
    "search_roots",
    "split_validation",
]

DATASETS = Registry("dataset")


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset, known without loading it."""

    shape: tuple[int, int, int]
    n_train: int
    n_test: int
    classes: tuple[str, ...]
    folders: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    how_to_get: str = ""
    approximate: bool = False
    note: str = ""
    md5: dict[str, str] = field(default_factory=dict)


@dataclass
class Dataset:
    """A loaded dataset: float32 images in [0, 1] of shape (N, C, H, W) and int64 labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    info: DatasetInfo
    source: str = ""

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    @property
    def num_classes(self) -> int:
        return len(self.info.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def approximate(self) -> bool:
        """True where the pixels are not the original release's (CIFAR-10 from JPEG)."""
        return self.info.approximate

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of ``"train"`` or ``"test"``."""
        if name == "train":
            return self.x_train, self.y_train
        if name == "test":
            return self.x_test, self.y_test
        raise DataError(f"Unknown split {name!r}; use 'train' or 'test'.")


_MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
_FASHION_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
_IDX_FILES = tuple(f"{n}.gz" for n in _MNIST_MD5)

INFOS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        (1, 28, 28),
        60_000,
        10_000,
        tuple(str(i) for i in range(10)),
        ("mnist",),
        _IDX_FILES,
        "MNIST ships in the repository's data/mnist/; or run `neurorobust data download mnist`.",
        md5=_MNIST_MD5,
    ),
    "fashion-mnist": DatasetInfo(
        (1, 28, 28),
        60_000,
        10_000,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        ("fashion-mnist",),
        _IDX_FILES,
        "Install it with `apt-get install dataset-fashion-mnist` or run `neurorobust data download fashion-mnist`.",
        md5=_FASHION_MD5,
    ),
    "cifar10": DatasetInfo(
        (3, 32, 32),
        50_000,
        10_000,
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        ("cifar10-jpeg", "cifar-10-batches-bin"),
        (),
        "Use the JPEG copy in ../shared/data/cifar10-jpeg/ or run `neurorobust data download cifar10`.",
        approximate=True,
        note="JPEG copy: pixels are lossy re-decodings, labels exact; results are approximate.",
        md5={
            "train_jpeg.bin": "49331bf8d8cc29d525c80259fa27d501",
            "train_offsets.npy": "35c3115ffc5172090e7e7cf1f366eb3d",
            "train_labels.npy": "f63a0472542ec2a4905877167f099df9",
            "test_jpeg.bin": "e758b86ec6ade5edeea771111058072f",
            "test_offsets.npy": "244764113d63d3f5e0024a017783db33",
            "test_labels.npy": "0fa98bb56d9489cc65d6d7b3b8c6caa2",
        },
    ),
    "caltech10": DatasetInfo(
        (3, 128, 128),
        2_433,
        611,
        (
            "Faces_easy",
            "Leopards",
            "Motorbikes",
            "airplanes",
            "bonsai",
            "car_side",
            "chandelier",
            "hawksbill",
            "ketch",
            "watch",
        ),
        ("caltech10",),
        (
            "classes.txt",
            "train_jpeg.bin",
            "train_offsets.npy",
            "train_labels.npy",
            "test_jpeg.bin",
            "test_offsets.npy",
            "test_labels.npy",
        ),
        "Build it from Caltech-101 with ../shared/data/scripts/build_caltech10.py (see docs/data.md).",
        note="10 Caltech-101 classes at 128x128, imbalanced: report balanced accuracy.",
        md5={
            "train_jpeg.bin": "aa0b108775a610decaaa2d2ce421dca5",
            "train_offsets.npy": "ef4250b0aadc52e54fd20b2d7a2c4fa2",
            "train_labels.npy": "6ef18ab483ca707947b48d27a72a9392",
            "test_jpeg.bin": "77a710113ffff6830b81cd51ab5b7776",
            "test_offsets.npy": "00c5d98c9543228b504478526efb8cd1",
            "test_labels.npy": "ca44b91348b38fdddc4082266b5979a4",
        },
    ),
    "patches": DatasetInfo(
        (1, 10, 10),
        4_000,
        1_000,
        ("A", "B", "C", "D"),
        note="Generated (sleep paper toy set): 10x10 binary, 25 bright pixels, 10 shared by all classes.",
    ),
    "digits": DatasetInfo(
        (1, 8, 8),
        1_437,
        360,
        tuple(str(i) for i in range(10)),
        note="scikit-learn's 8x8 digits (bundled with scikit-learn), stratified 80/20 split, seed 0.",
    ),
}


def locate_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """Folder holding ``name`` (``None`` for generated datasets); raises :class:`DataError` if absent."""
    info = INFOS[DATASETS.get(name).name]
    if not info.folders:
        return None
    if name == "cifar10":
        try:
            batches = ("test_batch.bin", *(f"data_batch_{i}.bin" for i in range(1, 6)))
            return find_folder(name, ("cifar-10-batches-bin",), batches, info.how_to_get, data_dir)
        except DataError:
            files = ("train_jpeg.bin", "train_offsets.npy", "train_labels.npy", "test_jpeg.bin")
            return find_folder(name, ("cifar10-jpeg",), files, info.how_to_get, data_dir)
    return find_folder(name, info.folders, info.files, info.how_to_get, data_dir)


def _to_tensor(images: np.ndarray, channels_last: bool) -> torch.Tensor:
    x = torch.from_numpy(np.array(images, copy=not images.flags.writeable))
    x = x.permute(0, 3, 1, 2) if channels_last else x.unsqueeze(1)
    return x.contiguous().float().div_(255.0)


def _labels(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(y.astype(np.int64, copy=True))


def _load_idx_dataset(name: str, data_dir: str | os.PathLike[str] | None) -> Dataset:
    info = INFOS[name]
    folder = locate_dataset(name, data_dir)
    if folder is None:  # IDX datasets always live in a folder; locate_dataset raises first
        raise DataError(f"{name}: no data folder found")
    parts = {}
    for split, prefix, n in (("train", "train", info.n_train), ("test", "t10k", info.n_test)):
        x = read_idx(
            folder / f"{prefix}-images-idx3-ubyte.gz", ndim=3, count=n, md5=info.md5[f"{prefix}-images-idx3-ubyte"]
        )
        y = read_idx(
            folder / f"{prefix}-labels-idx1-ubyte.gz", ndim=1, count=n, md5=info.md5[f"{prefix}-labels-idx1-ubyte"]
        )
        if x.shape[1:] != (28, 28):
            raise DataError(f"{folder}: {split} images are {x.shape[1:]}, expected 28x28.")
        if y.max() > 9:
            raise DataError(f"{folder}: {split} labels go up to {y.max()}, expected 0..9.")
        parts[split] = (_to_tensor(x, channels_last=False), _labels(y))
    return Dataset(name, *parts["train"], *parts["test"], info=info, source=str(folder))


@DATASETS.register("mnist", paper="LeCun et al. 1998, Gradient-based learning applied to document recognition")
def load_mnist(data_dir: str | None = None) -> Dataset:
    """MNIST handwritten digits, 28x28 grey, 60,000/10,000 (IDX files, md5-checked)."""
    return _load_idx_dataset("mnist", data_dir)


@DATASETS.register("fashion-mnist", paper="Xiao et al. 2017, arXiv:1708.07747")
def load_fashion_mnist(data_dir: str | None = None) -> Dataset:
    """Fashion-MNIST clothing images, 28x28 grey, 60,000/10,000 (IDX files, md5-checked)."""
    return _load_idx_dataset("fashion-mnist", data_dir)


def _read_cifar_binary(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for split, files in (("train", [f"data_batch_{i}.bin" for i in range(1, 6)]), ("test", ["test_batch.bin"])):
        xs, ys = [], []
        for f in files:
            raw = np.fromfile(folder / f, dtype=np.uint8)
            if raw.size % 3073:
                raise DataError(f"{folder / f}: size {raw.size} is not a multiple of 3073; truncated file.")
            rec = raw.reshape(-1, 3073)
            ys.append(rec[:, 0])
            xs.append(rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        out[split] = (np.concatenate(xs), np.concatenate(ys))
    return out


@DATASETS.register("cifar10", paper="Krizhevsky 2009, Learning multiple layers of features from tiny images")
def load_cifar10(data_dir: str | None = None) -> Dataset:
    """CIFAR-10, 32x32 RGB, 50,000/10,000; the JPEG copy is marked approximate in every result."""
    info = INFOS["cifar10"]
    folder = locate_dataset("cifar10", data_dir)
    if folder is None:
        raise DataError("cifar10: no data folder found")
    if folder.name == "cifar-10-batches-bin" or (folder / "test_batch.bin").is_file():
        parts = _read_cifar_binary(folder)
        info = DatasetInfo(**{**info.__dict__, "approximate": False, "note": "original binary release"})
    else:
        parts = {s: read_jpeg_split(folder, s, size=(32, 32), md5s=info.md5) for s in ("train", "test")}
    tensors = [t for s in ("train", "test") for t in (_to_tensor(parts[s][0], True), _labels(parts[s][1]))]
    return Dataset("cifar10", *tensors, info=info, source=str(folder))


@DATASETS.register("caltech10", paper="Fei-Fei, Fergus, Perona 2004 (Caltech-101); 10-class subset, ours")
def load_caltech10(data_dir: str | None = None) -> Dataset:
    """Ten Caltech-101 classes at 128x128 RGB, 2,433/611, imbalanced (stand-in for ImageNet10)."""
    info = INFOS["caltech10"]
    folder = locate_dataset("caltech10", data_dir)
    if folder is None:
        raise DataError("caltech10: no data folder found")
    names = tuple((folder / "classes.txt").read_text().split())
    if names != info.classes:
        raise DataError(f"{folder / 'classes.txt'}: classes {names} differ from the expected {info.classes}.")
    parts = {s: read_jpeg_split(folder, s, size=(128, 128), md5s=info.md5) for s in ("train", "test")}
    tensors = [t for s in ("train", "test") for t in (_to_tensor(parts[s][0], True), _labels(parts[s][1]))]
    return Dataset("caltech10", *tensors, info=info, source=str(folder))


@DATASETS.register("patches", paper="Tadros et al. 2020, ICLR (toy set; generator ours, see docs/data.md)")
def load_patches(data_dir: str | None = None) -> Dataset:
    """The sleep paper's Patches: 4 classes, 10x10 binary, 25 bright pixels, generated deterministically."""
    info = INFOS["patches"]
    xtr, ytr = make_patches(info.n_train // 4, seed=1)
    xte, yte = make_patches(info.n_test // 4, seed=2)
    return Dataset(
        "patches",
        torch.from_numpy(xtr).float().unsqueeze(1),
        _labels(ytr),
        torch.from_numpy(xte).float().unsqueeze(1),
        _labels(yte),
        info=info,
        source="generated",
    )


@DATASETS.register("digits", paper="Alpaydin & Kaynak 1998, UCI optical recognition of handwritten digits")
def load_digits(data_dir: str | None = None) -> Dataset:
    """scikit-learn's 8x8 digits (values 0..16 scaled to [0, 1]), 1,437/360: a smoke-test set."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    x = (bunch.images / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, bunch.target, test_size=360, random_state=0, stratify=bunch.target)
    return Dataset(
        "digits",
        torch.from_numpy(xtr).unsqueeze(1),
        _labels(ytr),
        torch.from_numpy(xte).unsqueeze(1),
        _labels(yte),
        info=INFOS["digits"],
        source="scikit-learn",
    )


VALIDATION_SEED = 20_200_101


def split_validation(dataset: Dataset, n: int) -> Dataset:
    """Hold out ``n`` training images (seeded, class-balanced, the same for every model and seed).

    Returns a :class:`Dataset` whose ``x_train``/``y_train`` are the remaining training images and
    whose ``x_test``/``y_test`` are the held-out validation images: searches tune on it, never on
    the test split.
    """
    if not 0 < n < len(dataset.y_train):
        raise DataError(f"data.validation must be in (0, {len(dataset.y_train)}); got {n}.")
    val = balanced_subset(dataset.y_train, n, seed=VALIDATION_SEED)
    keep = torch.ones(len(dataset.y_train), dtype=torch.bool)
    keep[val] = False
    return Dataset(
        dataset.name,
        dataset.x_train[keep],
        dataset.y_train[keep],
        dataset.x_train[val],
        dataset.y_train[val],
        info=dataset.info,
        source=dataset.source + " (validation split)",
    )


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, data_dir: str | None) -> Dataset:
    return DATASETS.create(name, data_dir=data_dir)


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Load a registered dataset (memoised per process); see :data:`DATASETS` for names.

    Raises
    ------
    UnknownNameError
        ``name`` is not registered.
    DataError
        The files are missing (the message lists every place searched) or corrupt.
    """
    DATASETS.get(name)
    return _load_cached(name, None if data_dir is None else str(data_dir))
