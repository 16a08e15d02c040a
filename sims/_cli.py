"""Argument parsing shared by every ``sims`` command: the parser, the option types and groups, and
the names commands use from the command plumbing (``surgesim.command``: ``run``, ``out_dir``, ...).

A command's ``main(argv)`` is ``args = build_parser().parse_args(argv); return _cli.run(lambda:
_main(args))``; ``_main`` checks everything first (the argparse types, ``check_int``, ``need_memory``,
``check_problem``, ``out_file``), then writes every output to ``out / NAME`` of ``out = out_dir(...)``.
``run`` commits them when it succeeds and makes any failure one ``error:`` line naming the option.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from surgesim._jit import uncached_kernels
from surgesim.backend import BackendUnavailable
from surgesim.command import ISSUES, Interrupted, Reported, UsageError, open_output, sub_command, version, warn  # noqa: F401
from surgesim.command import one_line as _one_line
from surgesim.command import run as _run
from surgesim.outputs import OutputDir, write_json  # noqa: F401
from surgesim.preflight import available_memory, check_memory, check_problem  # noqa: F401
from surgesim.sweep import SchedulerTimeout, StoreMismatch, task_row  # noqa: F401

SEED_LIMIT = 2**63


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one ``error: ...`` line and exit status 2, and ``--version``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=f"%(prog)s (surgesim {version()})")

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        print(f"error: {_one_line(message)} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def parser(module: str, doc: str) -> Parser:
    """The parser of ``python -m MODULE`` (``surgesim NAME`` under the console script): the
    docstring's first paragraph as description, the rest as epilog (kept as written)."""
    head, _, rest = doc.partition("\n\n")
    prog = f"surgesim {module.removeprefix('sims.')}" if Path(sys.argv[0]).name == "surgesim" else f"python -m {module}"
    return Parser(prog=prog, description=head, epilog=rest,
                  formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip


def _options_of(exc: BaseException) -> tuple[int, str] | None:
    """The error line of a library error that came from an option, naming the option."""
    if isinstance(exc, StoreMismatch):  # a rerun into the --out of another run
        return 2, (f"--out {exc.path.parent} holds the results of a different sweep: choose another --out, or delete "
                   f"{exc.path} to start over ({exc.difference})")  # fmt: skip
    if isinstance(exc, BackendUnavailable):
        return 2, f"--backend {exc.backend}: {exc.reason}"
    if isinstance(exc, SchedulerTimeout):
        return 2, str(exc).replace("connect_timeout sets", "connect_timeout / --connect-timeout sets")
    return None


def run(main: Callable[[], int | None]) -> int:
    """Run a command's body under the shared handler (``surgesim.command.run``); its exit status."""
    return _run(main, _options_of)


def flag_error(exc: ValueError) -> UsageError:
    """A library's refusal of an option (e.g. ``surgesim.schedule_study.resolve_schedule_options``)
    as the command's usage error: each option it names as `key` becomes the flag --key."""
    return UsageError(re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: "--" + m[1].replace("_", "-"), str(exc)))


def out_dir(path: str, command: str | None = None, inputs: dict | None = None) -> OutputDir:
    """The command's output directory, created and locked (``surgesim.command.open_output``): write
    outputs to ``out / NAME`` (committed all at once when the command succeeds), a resumable store to
    ``out.final(NAME)``. Call it after every check, inside ``run``. ``command`` (e.g. "sims.fit") and
    ``inputs`` (a JSON-serialisable dict) go to its manifest: another command's directory, or a rerun
    with other inputs, is refused."""
    if path is None or str(path).strip() == "":
        raise UsageError("--out must be a non-empty path")
    return open_output(path, command=command, inputs=inputs)


def out_file(path: str) -> Path:
    """A single output file (``--out FILE``), checked before any work: a writable directory must
    hold it and it must not be a directory."""
    p = Path(path)
    if str(path).strip() == "" or p.is_dir():
        raise UsageError(f"--out {path!r} must be a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {path!r}: directory {str(parent)!r} does not exist or is not writable")
    return p


def save_options(opts: Any, path: str | os.PathLike) -> None:
    """The resolved options (a dataclass) as strict JSON beside the outputs."""
    write_json(dataclasses.asdict(opts), path)


def say_if_compiling(*modules: Any, quiet: bool = False) -> None:
    """Say, before a first run compiles them, that the modules' Numba kernels are not cached yet."""
    missing = 0 if quiet else uncached_kernels(*modules)
    if missing:
        print(f"compiling {missing} kernels for this machine (first run only: later runs load them from the "
              "cache)...", file=sys.stderr, flush=True)  # fmt: skip


def need_memory(nbytes: float, what: str) -> None:
    """Refuse a run whose arrays would need more memory than the machine has available."""
    try:
        check_memory(nbytes, what)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


CONNECT_TIMEOUT: dict[str, Any] = {"type": None, "default": 10.0, "metavar": "SECONDS",  # type: set below
                                   "help": "give up on a tcp:// scheduler that does not complete Dask's "
                                           "handshake within this time (default 10)"}  # fmt: skip


def output_options(group: Any, out: str | None, *, plot: str | None = "skip the figures",
                   quiet: str = "no table, no progress bar") -> None:  # fmt: skip
    """Declare ``--out`` (default ``out``; None: the command chooses), ``--no-plot`` (unless
    ``plot`` is None) and ``--quiet``: the output group every command shares."""
    group.add_argument("--out", default=out, help=f"output directory (default {out})" if out else "output directory")
    if plot is not None:
        group.add_argument("--no-plot", action="store_true", help=plot)
    group.add_argument("--quiet", action="store_true", help=quiet)


def dask_options(group: Any, default: str = "this process") -> None:
    """Declare ``--scheduler`` and ``--connect-timeout``: running a command's tasks on Dask."""
    group.add_argument("--scheduler", metavar="local:N|tcp://HOST:PORT",
                       help=f"run the tasks on Dask: local:N starts N local workers, tcp://HOST:PORT uses a "
                            f"running cluster (also via DASK_SCHEDULER_ADDRESS); default: {default}")  # fmt: skip
    group.add_argument("--connect-timeout", **CONNECT_TIMEOUT)


def scheduler_address(scheduler: str | None) -> str | None:
    """The scheduler a command's tasks run on: ``--scheduler``, else ``DASK_SCHEDULER_ADDRESS``,
    else None (this process). Check it first with ``surgesim.sweep.check_scheduler``."""
    return scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None


def _integer(text: str) -> int:
    """An integer written as digits, or in floating form when exact (1e6); not 1.5, inf, nan."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not math.isfinite(value) or not value.is_integer() or abs(value) >= 2**53:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(value)


def check_int(flag: str, value: int, lo: int, hi: int) -> None:
    """Refuse an integer option outside [lo, hi] (sizes that would not fit in memory or time)."""
    if value < lo:
        raise UsageError(f"{flag} must be >= {lo}, got {value}")
    if value > hi:
        raise UsageError(f"{flag} must be <= {hi}, got {value}")


def integer(lo: int, hi: int) -> Callable[[str], int]:
    """argparse type: an integer in [lo, hi]."""

    def parse(text: str) -> int:
        value = _integer(text)
        if not lo <= value <= hi:
            bound = f">= {lo}" if value < lo else f"<= {hi}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = "integer"
    return parse


def seed(text: str) -> int:
    """argparse type: a seed in [0, 2^63)."""
    value = _integer(text)
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"a seed must be in [0, 2^63), got {text!r}")
    return value


def finite(lo: float = -math.inf, hi: float = math.inf) -> Callable[[str], float]:
    """argparse type: a finite number in [lo, hi]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and lo <= value <= hi):
            raise argparse.ArgumentTypeError(f"expected a finite number in [{lo:g}, {hi:g}], got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated integers (each up to 2^53 in magnitude)."""
    try:
        values = [_integer(v.strip()) for v in text.split(",") if v.strip()]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if any(abs(v) > 2**53 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers up to 2^53, got {text!r}")
    return values


def float_list(text: str) -> list[float]:
    """argparse type: comma-separated finite numbers."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers, got {text!r}")
    return values


CONNECT_TIMEOUT["type"] = finite(1e-3, 3600)
