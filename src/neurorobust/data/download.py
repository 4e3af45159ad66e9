"""``neurorobust data download NAME``: fetch a dataset for users with internet (never used in tests).

MNIST and Fashion-MNIST come as IDX ``.gz`` files, checked against the md5 of their uncompressed
content; CIFAR-10 as its binary (non-pickle) release, unpacked to ``cifar-10-batches-bin/``.
caltech10 cannot be downloaded: build it with ``../shared/data/scripts/build_caltech10.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path

from ..errors import DataError
from .search import REPO_ROOT

__all__ = ["download_dataset", "download_target"]

_IDX_URLS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
_CIFAR_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"


def download_target(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Root that downloads go to: ``data_dir``, else ``$NEURO_DATA``, else the repository's ``data/``."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get("NEURO_DATA")
    return Path(env.split(os.pathsep)[0]) if env else REPO_ROOT / "data"


def _fetch(url: str, dest: Path) -> None:
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as fh:
            while block := resp.read(1 << 20):
                fh.write(block)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"Download of {url} failed ({exc}); check your connection or fetch the file by hand.") from None
    os.replace(tmp, dest)


def download_dataset(
    name: str, data_dir: str | os.PathLike[str] | None = None, progress: Callable[[str], None] | None = None
) -> Path:
    """Download ``name`` into the download target and verify it; returns the dataset folder."""
    from . import INFOS

    root = download_target(data_dir)
    if name in _IDX_URLS:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for base, md5 in INFOS[name].md5.items():
            dest = folder / f"{base}.gz"
            if progress:
                progress(f"fetching {dest.name}")
            part = dest.with_suffix(".gz.download")
            _fetch(_IDX_URLS[name] + dest.name, part)
            try:  # verify before replacing anything (the shipped copy stays if the download is bad)
                got = hashlib.md5(gzip.decompress(part.read_bytes())).hexdigest()
            except (OSError, EOFError, zlib.error) as exc:
                part.unlink(missing_ok=True)
                raise DataError(f"{dest.name}: the download is not a valid gzip file ({exc}); not kept.") from None
            if got != md5:
                part.unlink()
                raise DataError(f"{dest}: md5 {got} of the uncompressed content, expected {md5}; not kept.")
            os.replace(part, dest)
        return folder
    if name == "cifar10":
        root.mkdir(parents=True, exist_ok=True)
        archive = root / "cifar-10-binary.tar.gz"
        if progress:
            progress("fetching cifar-10-binary.tar.gz (162 MB)")
        _fetch(_CIFAR_URL, archive)
        if hashlib.md5(archive.read_bytes()).hexdigest() != _CIFAR_MD5:
            archive.unlink()
            raise DataError(f"{archive}: md5 mismatch, expected {_CIFAR_MD5}; not kept.")
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(root, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise DataError(f"{archive}: cannot unpack ({exc}).") from None
        archive.unlink()
        return root / "cifar-10-batches-bin"
    if name == "caltech10":
        raise DataError(
            "caltech10 cannot be downloaded: build it from a Caltech-101 checkout with "
            "../shared/data/scripts/build_caltech10.py SOURCE (see docs/data.md)."
        )
    raise DataError(f"{name!r} needs no download (it is generated or bundled with scikit-learn).")
