"""Your own model for the probe (``sims.probe --model FILE.py:FUNCTION``, ``probing.probe_model``):
the function named by a spec, called and its ``(model, loss_fn, inputs, targets)`` checked, and
the digest of its file (a changed file does not resume from a store's old rows).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["load_model_function", "call_model_function", "file_digest"]


def load_model_function(spec: str) -> Callable[[], tuple]:
    """The function named by ``FILE.py:FUNCTION`` or ``package.module:FUNCTION``. Raises ValueError
    (one line, naming the file) when the file is missing, fails to import, or lacks FUNCTION."""
    import importlib
    import importlib.util

    where, sep, name = str(spec).rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ValueError(f"a model must be named as FILE.py:FUNCTION or package.module:FUNCTION, got {spec!r}")
    try:
        if where.endswith(".py") or os.sep in where or "/" in where:
            path = Path(where)
            if not path.is_file():
                raise ValueError(f"no such file: {where}")
            mod_spec = importlib.util.spec_from_file_location(f"_surgesim_model_{path.stem}", path)
            if mod_spec is None or mod_spec.loader is None:
                raise ValueError(f"cannot load {where} as a Python module")
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ValueError:
        raise
    except BaseException as exc:  # the user's file raised while importing: say so in one line
        if isinstance(exc, KeyboardInterrupt):
            raise
        detail = " ".join(str(exc).split())[:200]
        raise ValueError(f"cannot import {where}: {type(exc).__name__}: {detail}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"{where} has no function {name}")
    return fn


def call_model_function(fn: Callable[[], tuple], what: str = "the model function") -> tuple:
    """FUNCTION() checked: ``(model, loss_fn, inputs, targets)`` with an nn.Module, a callable and
    two tensors of the same length (first axis: the example). Raises ValueError otherwise."""
    try:
        out = fn()
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ValueError(f"{what} raised {type(exc).__name__}: {detail}") from None
    if not isinstance(out, tuple | list) or len(out) != 4:
        got = f"a {len(out)}-tuple" if isinstance(out, tuple | list) else f"a {type(out).__name__}"
        raise ValueError(f"{what} must return (model, loss_fn, inputs, targets), got {got}")
    model, loss_fn, inputs, targets = out
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{what}: the model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise ValueError(f"{what}: loss_fn must be callable, got {type(loss_fn).__name__}")
    for label, t in (("inputs", inputs), ("targets", targets)):
        if not isinstance(t, torch.Tensor) or t.dim() < 1:
            raise ValueError(f"{what}: {label} must be a tensor with the example on the first axis")
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"{what}: inputs and targets have different lengths ({inputs.shape[0]} and "
                         f"{targets.shape[0]} examples)")  # fmt: skip
    if inputs.shape[0] < 8:
        raise ValueError(f"{what}: {inputs.shape[0]} examples are too few to probe (at least 8)")
    return model, loss_fn, inputs, targets


def file_digest(spec: str) -> str:
    """sha256 of the file of a ``FILE.py:FUNCTION`` spec ('' for a module path): a changed file
    does not resume from the store's old rows."""
    import hashlib

    where = str(spec).rpartition(":")[0]
    path = Path(where)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
