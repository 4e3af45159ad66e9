"""Reader for the concatenated-JPEG format of ``../shared/data/cifar10-jpeg`` and ``caltech10``.

A split is three files: ``<split>_jpeg.bin`` (JPEG files back to back), ``<split>_offsets.npy``
(int64, N+1 offsets; image ``i`` is ``bin[off[i]:off[i+1]]``) and ``<split>_labels.npy`` (uint8).
Decoded splits are cached as ``.npy`` under ``$NEURO_CACHE`` (default ``~/.cache/neurorobust``)
keyed by the md5 of the three files, because decoding 50,000 JPEGs takes ~10 s.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["cache_dir", "file_md5", "read_jpeg_split"]


def cache_dir() -> Path:
    """Folder for decoded-data and checkpoint caches (``$NEURO_CACHE`` or ``~/.cache/neurorobust``)."""
    return Path(os.environ.get("NEURO_CACHE", Path.home() / ".cache" / "neurorobust"))


def file_md5(path: Path, chunk: int = 1 << 22) -> str:
    """md5 hex digest of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_jpeg_split(
    folder: Path, split: str, *, size: tuple[int, int], md5s: dict[str, str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode one split into ``(images, labels)``: uint8 ``(N, H, W, 3)`` and uint8 ``(N,)``.

    ``md5s`` maps file names to expected md5s; a mismatch raises :class:`DataError` naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    names = [f"{split}_jpeg.bin", f"{split}_offsets.npy", f"{split}_labels.npy"]
    digests = {}
    for name in names:
        digests[name] = file_md5(folder / name)
        if md5s and name in md5s and digests[name] != md5s[name]:
            raise DataError(
                f"{folder / name}: md5 is {digests[name]}, expected {md5s[name]}; the file is corrupt or "
                "from another build, fetch or rebuild it (see the dataset's README)."
            )
    key = hashlib.md5("".join(digests[n] for n in names).encode()).hexdigest()[:16]
    cached = cache_dir() / "decoded" / f"{folder.name}-{split}-{key}.npy"
    try:
        offsets = np.load(folder / names[1], allow_pickle=False)
        labels = np.load(folder / names[2], allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{folder}: cannot read the {split} offsets/labels ({exc}); fetch them again.") from None
    if offsets.ndim != 1 or len(offsets) != len(labels) + 1:
        raise DataError(f"{folder}: {names[1]} has {len(offsets)} entries for {len(labels)} labels (expected N+1).")
    if cached.is_file():
        images = np.load(cached, allow_pickle=False)
        if images.shape == (len(labels), *size, 3):
            return images, labels
    blob = (folder / names[0]).read_bytes()
    if int(offsets[-1]) != len(blob):
        raise DataError(
            f"{folder / names[0]}: {len(blob)} bytes but offsets end at {int(offsets[-1])}; truncated file."
        )
    images = np.empty((len(labels), *size, 3), dtype=np.uint8)
    for i in range(len(labels)):
        try:
            img = Image.open(io.BytesIO(blob[offsets[i] : offsets[i + 1]])).convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{folder / names[0]}: image {i} does not decode ({exc}); the file is corrupt.") from None
        arr = np.asarray(img)
        if arr.shape != (*size, 3):
            raise DataError(f"{folder / names[0]}: image {i} has shape {arr.shape}, expected {(*size, 3)}.")
        images[i] = arr
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, images)
    os.replace(tmp, cached)
    return images, labels
