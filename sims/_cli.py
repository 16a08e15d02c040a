"""Shared command-line plumbing for ``sims``: one-line errors with exit status 2, options saved
beside the outputs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path


class UsageError(Exception):
    """Bad input found after parsing: printed as one ``error:`` line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ``error: ...`` on stderr and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def parser(module: str, doc: str) -> Parser:
    """The parser of ``python -m MODULE``: the docstring's first paragraph as description, the
    rest as epilog (kept as written)."""
    head, _, rest = doc.partition("\n\n")
    return Parser(prog=f"python -m {module}", description=head, epilog=rest,
                  formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip


def run(main: Callable[[], int | None]) -> int:
    """Call ``main``; turn bad input (UsageError, ValueError, TypeError, OSError) into one
    ``error:`` line and exit status 2, failed sweep tasks into one line and exit status 1 (the
    finished tasks stay in the store), and an interrupt into exit status 130."""
    from surgesim.sweep import SweepError

    _show_dashboard_address()
    try:
        return int(main() or 0)
    except SweepError as e:  # tasks failed; the others are in the store and a rerun retries
        lines = str(e).splitlines()
        print(f"error: {lines[0]} {lines[1].strip() if len(lines) > 1 else ''} (see the store; rerun to retry)",
              file=sys.stderr)  # fmt: skip
        return 1
    except (UsageError, ValueError, TypeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished results are kept", file=sys.stderr)
        return 130


class _DashboardLine(logging.Handler):
    """The library's log record of a Dask dashboard address (``--scheduler local:N``) as one line
    on the current stderr; the library itself never prints."""

    def emit(self, record: logging.LogRecord) -> None:
        if "dashboard" in record.getMessage():
            print(record.getMessage(), file=sys.stderr)


def _show_dashboard_address() -> None:
    log = logging.getLogger("surgesim.sweep")
    if not any(isinstance(h, _DashboardLine) for h in log.handlers):
        log.addHandler(_DashboardLine(logging.INFO))
        log.setLevel(logging.INFO)


def out_dir(path: str) -> Path:
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"--out {path!r} exists and is not a directory")
    p.mkdir(parents=True, exist_ok=True)
    if not os.access(p, os.W_OK):
        raise UsageError(f"--out {path!r} is not writable")
    return p


def write_json(obj, path: Path) -> None:
    """``obj`` as strict JSON (RFC 8259: no NaN or Infinity tokens): every non-finite float, at any
    depth, is written as the string "inf", "-inf" or "nan" (docs/outputs.md, Conventions)."""

    def finite(x):
        if isinstance(x, float):
            return x if math.isfinite(x) else ("nan" if math.isnan(x) else "inf" if x > 0 else "-inf")
        if isinstance(x, dict):
            return {k: finite(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [finite(v) for v in x]
        return x

    path.write_text(json.dumps(finite(obj), indent=2, allow_nan=False) + "\n")


def save_options(opts, path: Path) -> None:
    """The resolved options (a dataclass) as JSON beside the outputs."""
    path.write_text(json.dumps(dataclasses.asdict(opts), indent=2, default=str) + "\n")


def int_list(text: str) -> list[int]:
    try:
        values = [int(float(v)) if float(v).is_integer() else float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(not isinstance(v, int) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return values


def float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return values
