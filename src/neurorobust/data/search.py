"""Where datasets are looked for (DESIGN §4).

Search order: an explicit ``data_dir``, ``$NEURO_DATA``, the repository's ``data/``,
``../shared/data`` beside the repository, then ``/usr/share/datasets`` (Debian's
``dataset-fashion-mnist``). A dataset that is in none of them raises one
:class:`~neurorobust.errors.DataError` listing every place tried and how to get it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError

__all__ = ["REPO_ROOT", "find_folder", "search_roots"]

# src/neurorobust/data/search.py -> repository root (editable install / source checkout).
REPO_ROOT = Path(__file__).resolve().parents[3]


def search_roots(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The roots searched for dataset folders, in order (duplicates removed)."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir))
    env = os.environ.get("NEURO_DATA")
    if env:
        roots.extend(Path(p) for p in env.split(os.pathsep) if p)
    roots += [REPO_ROOT / "data", REPO_ROOT.parent / "shared" / "data", Path("/usr/share/datasets")]
    seen: set[Path] = set()
    unique = []
    for r in roots:
        key = r.resolve() if r.exists() else r
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return unique


def find_folder(
    dataset: str,
    folder_names: Sequence[str],
    required_files: Sequence[str],
    how_to_get: str,
    data_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Return the first ``root/folder`` holding every file of ``required_files``.

    Parameters
    ----------
    dataset : str
        Registry name, for the message.
    folder_names : sequence of str
        Folder names that may hold the dataset under a root (e.g. ``("cifar10-jpeg",)``).
    required_files : sequence of str
        Files that must all be present for the folder to count.
    how_to_get : str
        One sentence telling the user how to obtain the data.
    data_dir : path, optional
        Checked first; may itself be the dataset folder or a root holding it.
    """
    tried: list[str] = []
    candidates: list[Path] = []
    if data_dir is not None:
        candidates.append(Path(data_dir))
    for root in search_roots(data_dir):
        candidates += [root / name for name in folder_names]
    for folder in candidates:
        if all((folder / f).is_file() for f in required_files):
            return folder
        tried.append(str(folder))
    raise DataError(
        f"Dataset {dataset!r} not found. Looked for {', '.join(required_files)} in: "
        + "; ".join(tried)
        + f". {how_to_get} Or pass --data-dir / set NEURO_DATA to the folder that holds it."
    )
