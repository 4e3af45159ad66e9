"""Reader for the IDX format of MNIST and Fashion-MNIST, with integrity checks.

An IDX file starts with a big-endian magic number ``0x000008NN`` (``0x08`` = unsigned byte,
``NN`` = number of dimensions), then one big-endian uint32 per dimension, then the data.
Gzipped and plain files are both accepted; the md5 is taken of the uncompressed content
(DESIGN §4), so upstream files and our re-gzipped copies both pass.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["read_idx"]


def read_idx(path: str | Path, *, ndim: int, count: int | None = None, md5: str | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes into a numpy array.

    Parameters
    ----------
    path : path
        ``.gz`` or uncompressed IDX file.
    ndim : int
        Expected number of dimensions (3 for images, 1 for labels).
    count : int, optional
        Expected length of the first dimension.
    md5 : str, optional
        Expected md5 of the uncompressed bytes.

    Returns
    -------
    numpy.ndarray of dtype uint8 and shape given by the header.

    Raises
    ------
    DataError
        Unreadable or truncated gzip, wrong magic number, dimension or count mismatch,
        data shorter or longer than the header says, md5 mismatch.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read ({exc}); the file is corrupt or truncated, fetch it again.") from None
    if len(raw) < 4:
        raise DataError(f"{path}: file is {len(raw)} bytes, too short for an IDX header; fetch it again.")
    zero, dtype_code, dims = struct.unpack(">HBB", raw[:4])
    expected_magic = 0x0800 + ndim
    if zero != 0 or dtype_code != 0x08 or dims != ndim:
        raise DataError(
            f"{path}: wrong magic number 0x{int.from_bytes(raw[:4], 'big'):08x}, expected "
            f"0x{expected_magic:08x} (unsigned bytes, {ndim} dimension(s)); this is not the expected IDX file."
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; fetch the file again.")
    shape = struct.unpack(">" + "I" * ndim, raw[4:header])
    if count is not None and shape[0] != count:
        raise DataError(f"{path}: header says {shape[0]} items, expected {count}; wrong or corrupt file.")
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise DataError(
            f"{path}: {len(raw) - header} data bytes but the header {shape} needs {size}; "
            "the file is truncated or corrupt, fetch it again."
        )
    if md5 is not None:
        got = hashlib.md5(raw).hexdigest()
        if got != md5:
            raise DataError(
                f"{path}: md5 of the uncompressed content is {got}, expected {md5}; the file is corrupt "
                "or a different release, fetch it again."
            )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
