"""Your own test images: an ``.npz`` with ``x`` and ``y``, or a folder of class folders of images.

``neurorobust evaluate --model ... --data PATH`` and ``neurorobust.evaluate(model, PATH)`` read
them into a :class:`~neurorobust.data.Dataset` whose test split is every image (its training split
is empty: nothing is trained on your data). Checked: shapes, a [0, 1] value range (``uint8`` images
are divided by 255), finite values, integer labels 0..K-1, one image size per folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from . import Dataset, DatasetInfo

__all__ = ["as_dataset", "dataset_from_arrays", "load_user_data"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def load_user_data(path: str | Path) -> Dataset:
    """A Dataset from ``path``: ``.npz`` (arrays ``x``, ``y``) or a folder with one sub-folder of images per class.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "mine.npz"
    >>> np.savez(f, x=np.zeros((4, 28, 28), np.uint8), y=np.array([0, 1, 0, 1]))
    >>> d = load_user_data(f)
    >>> tuple(d.x_test.shape), d.num_classes
    ((4, 1, 28, 28), 2)
    """
    p = Path(path)
    if p.suffix == ".npz":
        if not p.is_file():
            raise DataError(f"{p}: no such file.")
        x, y, classes = _from_npz(p)
    elif p.is_dir():
        x, y, classes = _from_folder(p)
    else:
        raise DataError(
            f"{p}: give a registered dataset name (neurorobust data info), an .npz file with arrays x and y, "
            "or a folder with one sub-folder of images per class."
        )
    info = DatasetInfo(shape=tuple(x.shape[1:]), n_train=0, n_test=len(x), classes=classes, note=f"user data: {p}")
    empty_x, empty_y = x[:0], y[:0]
    return Dataset(name=p.stem, x_train=empty_x, y_train=empty_y, x_test=x, y_test=y, info=info, source=str(p))


def dataset_from_arrays(x: object, y: object, name: str = "arrays") -> Dataset:
    """A Dataset (test split only) from images ``x`` and labels ``y`` (numpy arrays or tensors), checked as an
    ``.npz`` would be."""
    xa = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    ya = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    xt, yt, classes = _checked(Path(name), xa, ya)
    info = DatasetInfo(shape=tuple(xt.shape[1:]), n_train=0, n_test=len(xt), classes=classes, note="user arrays")
    return Dataset(name=name, x_train=xt[:0], y_train=yt[:0], x_test=xt, y_test=yt, info=info, source=name)


def as_dataset(data: object) -> Dataset:
    """``data`` as a Dataset: a Dataset, a registered name, an ``.npz`` / image-folder path, or ``(x, y)`` arrays."""
    from . import DATASETS, load_dataset

    if isinstance(data, Dataset):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        return dataset_from_arrays(*data)
    if isinstance(data, str) and data in DATASETS.names():
        return load_dataset(data)
    if isinstance(data, (str, Path)):
        return load_user_data(data)
    raise DataError(
        f"data must be a Dataset, a dataset name ({', '.join(DATASETS.names())}), an .npz / image-folder path "
        f"or (x, y) arrays; got {type(data).__name__}."
    )


def _from_npz(p: Path) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    try:
        with np.load(p, allow_pickle=False) as f:
            missing = {"x", "y"} - set(f.files)
            if missing:
                raise DataError(f"{p}: needs arrays 'x' (images) and 'y' (labels); it has {sorted(f.files)}.")
            x, y = f["x"], f["y"]
    except (ValueError, OSError) as exc:
        raise DataError(f"{p}: not a readable .npz file ({exc}).") from None
    return _checked(p, x, y)


def _checked(p: Path, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # channels last -> (N, C, H, W)
    if x.ndim != 4:
        raise DataError(f"{p}: x must be images (N, H, W), (N, C, H, W) or (N, H, W, C); got shape {x.shape}.")
    classes = _check_labels(p, y, len(x))
    return _as_unit_range(p, x), torch.as_tensor(y, dtype=torch.int64), classes


def _from_folder(p: Path) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    from PIL import Image, UnidentifiedImageError

    classes = tuple(sorted(d.name for d in p.iterdir() if d.is_dir()))
    if len(classes) < 2:
        raise DataError(f"{p}: needs one sub-folder of images per class (at least 2); found {len(classes)}.")
    files = [
        (f, k) for k, c in enumerate(classes) for f in sorted((p / c).iterdir()) if f.suffix.lower() in _IMAGE_SUFFIXES
    ]
    if not files:
        raise DataError(f"{p}: no images ({', '.join(_IMAGE_SUFFIXES)}) in its class folders.")
    images = []
    for f, _ in files:
        try:
            with Image.open(f) as im:
                images.append(im.convert("RGB") if im.mode not in ("L", "1") else im.convert("L"))
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{f}: not a readable image ({exc}).") from None
    if len({im.size for im in images}) > 1:
        raise DataError(f"{p}: the images differ in size ({sorted({im.size for im in images})[:3]} ...); resize them.")
    gray = all(im.mode == "L" for im in images)
    arrays = [np.asarray(im if gray else im.convert("RGB")) for im in images]
    x = np.stack(arrays)
    x = x[:, None] if gray else x.transpose(0, 3, 1, 2)
    y = np.array([k for _, k in files], dtype=np.int64)
    return _as_unit_range(p, x), torch.as_tensor(y), classes


def _check_labels(p: Path, y: np.ndarray, n: int) -> tuple[str, ...]:
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{p}: y must hold one label per image ({n}); got shape {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer) or len(y) == 0 or int(y.min()) < 0:
        raise DataError(f"{p}: y must be integer class labels 0..K-1; got {y.dtype} from {y.min() if len(y) else '-'}.")
    return tuple(str(k) for k in range(int(y.max()) + 1))


def _as_unit_range(p: Path, x: np.ndarray) -> torch.Tensor:
    if x.dtype == np.uint8:
        return torch.as_tensor(x.astype(np.float32) / 255.0)
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{p}: images must be uint8 (0-255) or floats in [0, 1]; got {x.dtype}.")
    if not np.isfinite(x).all():
        raise DataError(f"{p}: the images hold NaN or infinite values.")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise DataError(f"{p}: float images must lie in [0, 1]; found [{float(x.min()):.3g}, {float(x.max()):.3g}].")
    return torch.as_tensor(x.astype(np.float32))
