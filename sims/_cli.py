"""Argument parsing shared by every ``sims`` command: the parser, the option types and groups, and
the names commands use from the command plumbing (``surgesim.command``: ``run``, ``out_dir``,
``need_memory``, ``checked_scheduler``, ...).

A command defines ``build_parser()`` and ``_main(args)``, and ``main = _cli.main_of(__name__)``: it
parses ``argv`` and runs ``_main`` under ``run``. ``_main`` checks everything first (the argparse
types, ``flag_checked``, ``need_memory``, ``check_problem``, ``out_file``), then writes every output to
``out / NAME`` of ``out = out_dir(...)``. ``run`` commits them when it succeeds and makes any
failure one ``error:`` line naming the option.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from surgesim.command import (  # noqa: F401
    UsageError,
    checked_scheduler,
    flag_checked,
    need_memory,
    option_error,
    out_dir,
    out_file,
    out_opener,
    save_options,
    say_if_compiling,
    scheduler_address,
    torch_module,
    version,
    warn,
)
from surgesim.command import one_line as _one_line
from surgesim.command import run as _run
from surgesim.outputs import write_json  # noqa: F401
from surgesim.preflight import available_memory, check_problem  # noqa: F401

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


def run(main: Callable[[], int | None]) -> int:
    """Run a command's body under the shared handler (``surgesim.command.run``); its exit status."""
    return _run(main, option_error)


def main_of(module: str) -> Callable[[list[str] | None], int]:
    """The ``main(argv)`` of the command ``module``: its ``build_parser()`` parses ``argv``, then its
    ``_main(args)`` runs under ``run``; the exit status."""

    def main(argv: list[str] | None = None) -> int:
        command = sys.modules[module]
        args = command.build_parser().parse_args(argv)
        return run(lambda: command._main(args))

    main.__module__ = module  # the command that a sub-command's error line names
    return main


def command_main(name: str) -> Callable[[list[str]], int]:
    """The ``main(argv)`` of the command ``sims.NAME`` (a command that runs another finds it here)."""
    return importlib.import_module(f"sims.{name}").main


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
