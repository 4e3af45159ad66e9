"""Your own model, from a Python file: ``neurorobust evaluate --model path/to/file.py:build_model``.

The file is imported as a module and ``build_model()`` (any name) is called with no arguments; it
returns an ``nn.Module`` mapping images in [0, 1] of shape (N, C, H, W) to logits (N, K). Trained
weights load from a safetensors file only (never a pickle: a ``.pt`` file can run code when loaded).
Every failure (missing file, import error, missing function, wrong return type, weights that do not
fit, a forward pass that raises or returns the wrong shape) is one :class:`~neurorobust.errors.SpecError`
or :class:`~neurorobust.errors.ModelOutputError` that says what to fix.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelOutputError, SpecError

__all__ = ["check_model_output", "load_user_function", "load_user_model"]


def load_user_function(ref: str, what: str = "--model") -> object:
    """The object named by ``"path/to/file.py:name"`` (the file imported as a fresh module)."""
    file, sep, name = ref.rpartition(":")
    if not sep or not file or not name:
        raise SpecError(f"{what} takes FILE.py:FUNCTION (e.g. mymodels.py:build_model), got {ref!r}.")
    path = Path(file)
    if not path.is_file():
        raise SpecError(f"{what}: no file {path}.")
    if path.suffix != ".py":
        raise SpecError(f"{what}: {path} is not a Python file (.py).")
    spec = importlib.util.spec_from_file_location(f"neurorobust_user_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise SpecError(f"{what}: {path} cannot be imported as a module.")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent.resolve()))  # the file may import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a user's file: any error is theirs to fix, said in one line
        raise SpecError(f"{what}: importing {path} raised {type(exc).__name__}: {exc}") from None
    finally:
        sys.path.pop(0)
    obj = getattr(module, name, None)
    if obj is None or not callable(obj):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise SpecError(f"{what}: {path} has no function {name!r}; callables there: {', '.join(found) or 'none'}.")
    return obj


def load_user_model(ref: str, weights: str | Path | None = None, *, what: str = "--model") -> nn.Module:
    """Build the model of ``"file.py:function"`` and load ``weights`` (a ``.safetensors`` file) into it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> src = pathlib.Path(tempfile.mkdtemp()) / "mine.py"
    >>> _ = src.write_text("import torch.nn as nn\\ndef build():\\n    return nn.Linear(4, 2)\\n")
    >>> type(load_user_model(f"{src}:build")).__name__
    'Linear'
    """
    build = load_user_function(ref, what)
    try:
        model = build()  # type: ignore[operator]
    except Exception as exc:
        raise SpecError(f"{what}: calling {ref}() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise SpecError(f"{what}: {ref}() must return a torch nn.Module, got {type(model).__name__}.")
    if weights is not None:
        path = Path(weights)
        if path.suffix != ".safetensors":
            raise SpecError(
                f"--weights: {path} is not a .safetensors file. Weights load only from safetensors (a pickle can "
                "run code): save them with safetensors.torch.save_file(model.state_dict(), 'model.safetensors')."
            )
        if not path.is_file():
            raise SpecError(f"--weights: no file {path}.")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise SpecError(f"--weights: {path} is not a readable safetensors file ({exc}).") from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise SpecError(f"--weights: {path} does not fit the model of {ref}: {first}") from None
    return model.eval()


def check_model_output(model: nn.Module, x: torch.Tensor, num_classes: int, name: str) -> None:
    """One forward pass on ``x``: the model must run and return finite (N, num_classes) logits."""
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:
        raise SpecError(
            f"The model {name} raised {type(exc).__name__} on images of shape {tuple(x.shape)} in [0, 1]: {exc}. "
            "It must take a batch of images (N, C, H, W) in [0, 1] of the dataset's shape."
        ) from None
    if not isinstance(out, torch.Tensor) or out.shape != (len(x), num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise SpecError(
            f"The model {name} must return logits of shape (N, {num_classes}) for the dataset's {num_classes} "
            f"classes; for {len(x)} images it returned {shape}."
        )
    if not bool(torch.isfinite(out).all()):
        raise ModelOutputError(model, f"({name}) returned NaN or infinite logits on clean images")
