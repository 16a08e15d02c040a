"""A sweep's tasks: parameters in canonical JSON, each task's id (the sha256 of that JSON), and
its result rows checked and encoded as they are stored."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["task_id", "Task", "prepare_tasks", "canonical", "encode_params", "dump_row", "encode_rows"]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable: {obj!r}")


def canonical(obj: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, no NaN/inf, NumPy scalars as Python numbers.

    >>> canonical({"b": 1.0, "a": [1, 2]})
    '{"a":[1,2],"b":1.0}'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=_json_default)  # fmt: skip


def encode_params(params: Any, what: str) -> str:
    """The canonical JSON of a dict of parameters (``what`` names them in a TypeError)."""
    if not isinstance(params, Mapping):
        raise TypeError(f"{what} must be a dict of JSON-serialisable values, got {type(params).__name__}: {params!r}")
    bad = [k for k in params if not isinstance(k, str)]
    if bad:
        raise TypeError(f"{what} keys must be strings, got {bad!r}")
    try:
        return canonical(dict(params))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} is not JSON-serialisable ({exc}): {params!r}") from None


def task_id(params: Mapping[str, Any]) -> str:
    """The stable id of a task: the sha256 hex digest of its parameters' canonical JSON.

    >>> task_id({"b": 2, "a": 1}) == task_id({"a": 1, "b": 2})
    True
    """
    return hashlib.sha256(encode_params(params, "task parameters").encode()).hexdigest()


@dataclass(frozen=True)
class Task:
    """One task of a sweep: its position in the task list, id and canonical parameters."""

    position: int
    task_id: str
    params_json: str


def prepare_tasks(tasks: Iterable[Mapping[str, Any]]) -> list[Task]:
    """The tasks, encoded, in order; ValueError when two have the same parameters."""
    out: list[Task] = []
    seen: dict[str, int] = {}
    for i, params in enumerate(tasks):
        text = encode_params(params, f"task {i}")
        tid = hashlib.sha256(text.encode()).hexdigest()
        if tid in seen:
            raise ValueError(f"tasks {seen[tid]} and {i} have the same parameters {text}: tasks must be distinct")
        seen[tid] = i
        out.append(Task(i, tid, text))
    return out


def dump_row(row: Mapping[str, Any]) -> str:
    """One result row as JSON. Rows are not key-sorted: their key order is the CSV column order.
    NaN and inf are allowed (Python's json writes and reads them back exactly)."""
    return json.dumps(dict(row), separators=(",", ":"), ensure_ascii=False, default=_json_default)


def encode_rows(result: Any) -> str:
    """fn's result (a row or a list of rows) as a JSON list, after checking its shape."""
    rows = [result] if isinstance(result, Mapping) else result
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
        raise TypeError(f"fn must return a dict or a list of dicts, got {type(result).__name__}")
    for r in rows:
        bad = [k for k in r if not isinstance(k, str)]
        if bad:
            raise TypeError(f"row keys must be strings, got {bad!r}")
    return "[" + ",".join(dump_row(r) for r in rows) + "]"
