"""The one CSV writer of every command (docs/outputs.md's conventions): floats exact, undefined
values as empty cells, written atomically."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..outputs import atomic_path

__all__ = ["write_csv"]


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""  # not defined (docs/outputs.md: an empty cell)
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return value


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, columns: Sequence[str] | None = None) -> None:
    """Write rows to a CSV file: floats in their exact shortest form (repr), None and NaN as empty.

    Columns are ``columns`` if given (a row with another key is an error), else every key in
    order of first appearance. Lists and dicts are written as JSON.
    """
    if not rows:
        raise ValueError("no rows to write")
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    else:
        columns = list(columns)
        known = set(columns)
        for i, r in enumerate(rows):
            extra = [k for k in r if k not in known]
            if extra:
                raise ValueError(f"row {i} has keys {extra} not in columns {columns}")
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for r in rows:
            writer.writerow([_cell(r.get(c)) for c in columns])
