"""Shared test helpers. Fixtures are function-scoped; datasets are memoised by the library itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def require_file(path: str | Path, package: str) -> None:
    """Skip when a system package's file is absent, except under CI=true where that is a failure."""
    if not Path(path).exists():
        msg = f"{path} missing: install the Debian package {package} (make test installs it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture
def one_thread():
    """Tiny models: one torch thread avoids spin overhead on a shared 2-core machine (restored after)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def store(tmp_path):
    from neurorobust.store import ResultsStore

    with ResultsStore(tmp_path / "results.db") as s:
        yield s


@pytest.fixture
def tiny_spec_file(tmp_path):
    """A spec that trains a small MLP on the digits set in about a second."""
    path = tmp_path / "tiny.toml"
    path.write_text(
        'description = "tiny"\n[data]\nname = "digits"\n[model]\nname = "mlp"\nparams = { widths = [32] }\n'
        '[train]\nepochs = 3\nbatch_size = 64\nlr = 0.01\n[evaluate]\nsuite = "none"\nn = 200\n'
        "noise_sigmas = [0.0, 0.3]\nblur_sigmas = [0.0, 1.0]\n"
    )
    return path
