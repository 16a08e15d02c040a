"""Shared command-line plumbing for ``sims``: the one top-level handler, the output directory,
and the up-front checks every command uses.

Every command's ``main(argv)`` is ``args = build_parser().parse_args(argv); return
_cli.run(lambda: _main(args))`` (``build_parser`` from ``_cli.parser``, which adds ``--version``)
and, inside ``_main``:

1. checks everything first: argparse types ``integer(lo, hi)``, ``seed``, ``finite(lo, hi)``,
   ``int_list``, ``float_list``; ``check_int`` for ranges checked after parsing; ``need_memory``
   for what the run's arrays need; ``check_problem`` for a problem's closed forms; ``out_file``
   for a single ``--out FILE``;
2. then ``out = _cli.out_dir(opts.out)`` and writes every output to ``out / NAME`` (``save_options``,
   ``write_json`` for strict JSON, ``surgesim.sweep.write_csv``, ``fig.savefig``), a resumable
   store to ``out.final(NAME)`` with ``run_sweep(..., connect_timeout=args.connect_timeout)`` and
   ``--connect-timeout`` declared as ``add_argument("--connect-timeout", **_cli.CONNECT_TIMEOUT)``;
   rows of one-row tasks are read with ``run_sweep(..., per_task=True)`` and ``task_row``.

``run`` then guarantees:

- outputs are written only by a run that succeeded, atomically: files written to ``out / NAME``
  are staged and moved into ``--out`` when ``_main`` returns 0; a refused or failed run leaves
  every file in ``--out`` byte-identical (``surgesim.outputs.OutputDir``);
- two runs cannot write to one ``--out``: it is locked, and the second gets an error at once;
- any failure is one line ``error: ...`` on stderr with exit status 2 (bad input, memory, disk,
  network, a damaged store), 1 for failed sweep tasks and for an internal bug (with a hint to
  report it; ``SURGESIM_TRACEBACK=1`` shows the traceback), 130 for Ctrl-C;
- warnings raised during the run are held back and printed (one ``warning:`` line each) only
  after a successful run, never before an error line.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import errno
import io
import json
import logging
import math
import os
import signal
import sqlite3
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

from surgesim.outputs import CommitIncomplete, OutputDir, atomic_path, dumps_json

ISSUES = "https://github.com/surgesim/surgesim/issues"
SEED_LIMIT = 2**63
_MESSAGE_LIMIT = 400  # characters of an error message shown (a bad 200,000-character field is cut)

# The output directories opened by the command that ``run`` is running (committed or discarded
# when it ends).
_open_outputs: list[OutputDir] = []


class UsageError(Exception):
    """Bad input found after parsing: printed as one ``error:`` line, exit status 2."""


class Reported(Exception):
    """A failure that a sub-command (``sims.figures`` running another command) has already
    reported on stderr: ends the command with its exit status and no second line."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exit status {code}")
        self.code = code


# What a command running another is doing (``sub_command``): the sub-command's error line names it.
_context: list[str] = []


@contextlib.contextmanager
def sub_command(what: str):
    """Run another command inside this one: its ``error:`` line starts with ``what``."""
    _context.append(what)
    try:
        yield
    finally:
        _context.pop()


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("surgesim")
    except PackageNotFoundError:  # a source tree that is not installed
        return "0+unknown"


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ``error: ...`` on stderr and exit status 2, and
    every command has ``--version``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=f"%(prog)s (surgesim {version()})")

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {_one_line(message)} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def parser(module: str, doc: str) -> Parser:
    """The parser of ``python -m MODULE`` (``surgesim NAME`` under the console script): the
    docstring's first paragraph as description, the rest as epilog (kept as written)."""
    head, _, rest = doc.partition("\n\n")
    prog = f"surgesim {module.removeprefix('sims.')}" if Path(sys.argv[0]).name == "surgesim" else f"python -m {module}"
    return Parser(prog=prog, description=head, epilog=rest,
                  formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip


def _one_line(message: str) -> str:
    """The message on one line; a long one is cut in its middle, so that its end (the exception
    of a failed task, the fix) is kept."""
    text = " ".join(str(message).split())
    if len(text) <= _MESSAGE_LIMIT:
        return text
    tail = _MESSAGE_LIMIT // 3
    return text[: _MESSAGE_LIMIT - tail] + " ... " + text[-tail:]


def _classify(exc: BaseException) -> tuple[int, str]:
    """(exit status, message) of a failure that ends a command."""
    from surgesim.sweep import StoreError, StoreMismatch, SweepError

    if isinstance(exc, StoreMismatch):  # a rerun into the --out of another run
        return 2, (f"--out {exc.path.parent} holds the results of a different sweep: choose another --out, or delete "
                   f"{exc.path} to start over ({exc.difference})")  # fmt: skip
    if isinstance(exc, SweepError):  # tasks failed; the others are in the store and a rerun retries
        first = exc.failures[0]
        params = json.dumps(first.params)
        params = params if len(params) <= 80 else params[:77] + "..."
        error = " ".join(first.error.split())
        error = error if len(error) <= 160 else error[:157] + "..."
        head = f"{len(exc.failures)} task(s) failed, e.g. task {first.position} {params}: {error}"
        return 1, (f"{head} (finished tasks are kept; rerun to retry; if the input is valid, please report it at "
                   f"{ISSUES})")  # fmt: skip
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {exc.filename}" if exc.filename else ""
        return 2, f"disk full{where} ({exc.strerror}): files already in the output directory are unchanged"
    if isinstance(exc, MemoryError):
        return 2, f"not enough memory{': ' + str(exc) if str(exc) else ''} (choose smaller sizes)"
    if isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError) and exc.filename:
        return 2, f"{exc.strerror or exc} ({exc.filename})"
    if isinstance(exc, (UsageError, ValueError, TypeError, OSError, StoreError, csv.Error, sqlite3.Error)):
        return 2, str(exc)
    return 1, (f"internal error ({type(exc).__name__}: {exc}); this is a bug in surgesim {version()}: please report "
               f"it with the command line at {ISSUES} (SURGESIM_TRACEBACK=1 shows the traceback)")  # fmt: skip


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled as Ctrl-C is: one line, exit status 128 + the signal's number,
    staged outputs deleted, finished results kept."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


_TERMINATING = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


@contextlib.contextmanager
def _signals_as_interrupt():
    """SIGTERM and SIGHUP raise ``Interrupted`` (as SIGINT raises KeyboardInterrupt) while a
    command runs; the handlers before are restored after. Only in the main thread."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in _TERMINATING}
    for s in _TERMINATING:
        if before[s] is not signal.SIG_IGN:  # nohup: an ignored SIGHUP stays ignored
            signal.signal(s, _raise_interrupted)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        before[signal.SIGINT] = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def _interrupted(exc: KeyboardInterrupt) -> int:
    what = f"interrupted ({exc.args[0]})" if isinstance(exc, Interrupted) else "interrupted"
    print(f"{what}: finished results are kept", file=sys.stderr)
    return 128 + (exc.signum if isinstance(exc, Interrupted) else signal.SIGINT)


_held: list[str] = []  # warning lines of the running command, printed only if it succeeds


def warn(message: str) -> None:
    """A ``warning: ...`` line for the user, printed when the command has succeeded (never before
    an error line)."""
    _held.append(_one_line(message))


class _Console:
    """stdout or stderr for the length of a command: a write to a console that has gone (a closed
    pipe, a hung-up terminal) is dropped instead of failing a run that may have finished."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.lost = False

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                return self._stream.write(text)
            except (BrokenPipeError, ConnectionResetError) as exc:
                self._lose(exc)
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.EIO, errno.EBADF):
                    raise
                self._lose(exc)
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self._stream.flush()
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.EIO, errno.EBADF):
                    raise
                self._lose(exc)

    def _lose(self, exc: OSError) -> None:
        self.lost = True
        try:  # later writes by Python itself (at exit) go nowhere instead of failing
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            pass

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def _tolerant_console():
    before = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Console(sys.stdout), _Console(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = before


def run(main: Callable[[], int | None]) -> int:
    """Run a command's body under the shared handler (see the module docstring)."""
    if not isinstance(sys.stdout, _Console):  # the outermost command: a lost console fails nothing
        with _tolerant_console():
            return run(main)
    code = 1
    held = len(_held)
    caught: list[warnings.WarningMessage] = []
    mine = len(_open_outputs)  # a command may run another (sims.figures): each owns its own outputs
    _show_dashboard_address()
    try:
        with _signals_as_interrupt() if mine == 0 and not _context else contextlib.nullcontext():
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        code = int(main() or 0)
                    except KeyboardInterrupt as exc:
                        code = _interrupted(exc)
                    except Reported as exc:
                        code = exc.code
                    except Exception as exc:  # the one place where failures become an exit status
                        code = _report(exc)
                    if code == 0:
                        try:  # every check of the commit comes before its one commit point
                            for out in _open_outputs[mine:]:
                                out.commit()
                        except Exception as exc:  # noqa: BLE001 - an error line, whatever failed
                            done = isinstance(exc, CommitIncomplete)  # after the commit point
                            code = _report(exc, "" if done else "cannot write the outputs: ")
            finally:
                while len(_open_outputs) > mine:
                    _open_outputs.pop().close()
    except KeyboardInterrupt as exc:  # during the commit or the clean-up: the commit is atomic
        code = _interrupted(exc)
    lines, _held[held:] = _held[held:], []
    if code == 0:
        for line in dict.fromkeys(lines):
            print(f"warning: {line}", file=sys.stderr)
        _reemit(caught)
    return code


def _report(exc: BaseException, prefix: str = "") -> int:
    """Print a failure's one ``error:`` line; returns its exit status."""
    if os.environ.get("SURGESIM_TRACEBACK"):
        traceback.print_exception(exc)
    code, message = _classify(exc)
    print(f"error: {''.join(c + ': ' for c in _context)}{prefix}{_one_line(message)}", file=sys.stderr)
    return code


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


def _reemit(caught: list[warnings.WarningMessage]) -> None:
    """Show the warnings of a successful run, once each, as ``warning: ...`` lines (through the
    warnings machinery, so that callers' filters still apply)."""
    seen = set()
    original = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *a, **k: f"warning: {_one_line(str(message))}\n"
    try:
        for w in caught:
            key = (w.category, str(w.message))
            if key not in seen:
                seen.add(key)
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    finally:
        warnings.formatwarning = original


def out_dir(path: str, command: str | None = None, inputs: dict | None = None) -> OutputDir:
    """The command's output directory, created and locked; write outputs to ``out / NAME``
    (they reach ``path`` only when the command succeeds, all at once) and a resumable store to
    ``out.final(NAME)``. Call it after every check, inside ``run``.

    ``command`` (e.g. "sims.fit") is recorded in the directory's manifest: a directory holding
    another command's outputs is refused. ``inputs`` (a JSON-serialisable dict) too, for a
    command without a store to check a rerun against: a rerun with other inputs is refused."""
    if path is None or str(path).strip() == "":
        raise UsageError("--out must be a non-empty path")
    out = OutputDir(path, command=command, inputs=inputs)
    out.open()
    _open_outputs.append(out)
    return out


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


def save_options(opts, path) -> None:
    """The resolved options (a dataclass) as strict JSON beside the outputs."""
    write_json(dataclasses.asdict(opts), path)


def write_json(obj, path) -> None:
    """Strict JSON written atomically (non-finite floats as "inf", "-inf", "nan": docs/outputs.md)."""
    with atomic_path(path) as tmp:
        tmp.write_text(dumps_json(obj))


def say_if_compiling(*modules, quiet: bool = False) -> None:
    """Say, before a first run compiles them, that the modules' Numba kernels are not in the
    on-disk cache yet (a first run after install spends most of its time compiling)."""
    if quiet:
        return
    missing = 0
    for module in modules:
        for fn in vars(module).values():
            try:
                index = fn._cache._cache_file._index_path  # numba's cache index of a cache=True kernel
            except AttributeError:
                continue
            if not fn.signatures and not os.path.exists(index):
                missing += 1
    if missing:
        print(f"compiling {missing} kernels for this machine (first run only: later runs load them from the "
              "cache)...", file=sys.stderr, flush=True)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Up-front checks


def available_memory() -> int:
    """Bytes of memory available to a new allocation (MemAvailable on Linux, else physical)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 1 << 62


def need_memory(nbytes: float, what: str) -> None:
    """Refuse a run whose arrays would need more memory than the machine has available."""
    have = available_memory()
    if not nbytes <= have:
        raise UsageError(f"{what} needs about {_bytes(nbytes)} of memory, more than the {_bytes(have)} available")


def _bytes(n: float) -> str:
    if not math.isfinite(n):
        return "unbounded"
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} EB"


CONNECT_TIMEOUT = {
    "type": None,  # set below (finite, > 0)
    "default": 10.0,
    "metavar": "SECONDS",
    "help": "give up on a tcp:// scheduler that does not complete Dask's handshake within this time (default 10)",
}


def output_options(
    group, out: str | None, *, plot: str | None = "skip the figures", quiet: str = "no table, no progress bar"
) -> None:
    """Declare ``--out`` (default ``out``; None: the command chooses), ``--no-plot`` (unless
    ``plot`` is None) and ``--quiet``: the output group every command shares."""
    group.add_argument("--out", default=out, help=f"output directory (default {out})" if out else "output directory")
    if plot is not None:
        group.add_argument("--no-plot", action="store_true", help=plot)
    group.add_argument("--quiet", action="store_true", help=quiet)


def dask_options(group, default: str = "this process") -> None:
    """Declare ``--scheduler`` and ``--connect-timeout``: running a command's tasks on Dask."""
    group.add_argument("--scheduler", metavar="local:N|tcp://HOST:PORT",
                       help=f"run the tasks on Dask: local:N starts N local workers, tcp://HOST:PORT uses a "
                            f"running cluster (also via DASK_SCHEDULER_ADDRESS); default: {default}")  # fmt: skip
    group.add_argument("--connect-timeout", **CONNECT_TIMEOUT)


def scheduler_address(scheduler: str | None) -> str | None:
    """The scheduler a command's tasks run on: ``--scheduler``, else ``DASK_SCHEDULER_ADDRESS``,
    else None (this process). Check it first with ``surgesim.sweep.check_scheduler``."""
    return scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None


def check_problem(problem, batch_sizes=(1,)) -> dict:
    """Refuse a problem whose closed forms overflow or divide by zero at these batch sizes (values
    near 1e300, H = 0 along mu) before any work, without printing NumPy's RuntimeWarnings.
    Returns the closed forms it checked (``surgesim.theory.curves`` at ``batch_sizes``), so that a
    caller does not compute them again (at d = 10^7 each pass over the coordinates costs seconds)."""
    import numpy as np

    from surgesim import theory

    if not np.any(problem.mu):
        raise UsageError("mu is zero in every coordinate: the expected gradient vanishes, so no learning rate "
                         "improves the loss and there is nothing to optimise; give a problem with mu != 0")  # fmt: skip
    try:
        with np.errstate(all="raise"):
            values = theory.curves(
                np.asarray(batch_sizes, dtype=np.float64), problem.mu, problem.sigma, problem.hessian
            )
    except (FloatingPointError, OverflowError, ZeroDivisionError) as exc:
        raise UsageError(f"the problem's closed forms are not finite ({exc}): mu, sigma and H must be of moderate "
                         "magnitude, and H must not vanish along mu") from None  # fmt: skip
    bad = sorted(k for k, v in values.items() if not np.all(np.isfinite(v)))
    if bad:
        raise UsageError(f"the problem's closed forms {', '.join(bad)} are not finite: mu, sigma and H must be of "
                         "moderate magnitude, and H must not vanish along mu")  # fmt: skip
    return values


def task_row(rows: list[dict], what: str, **expected) -> dict:
    """The one row of a sweep task (``run_sweep(..., per_task=True)``), checked against the task's
    own parameters: a store that lost or mixed rows is reported, never paired with another task."""
    from surgesim.sweep import StoreError

    if len(rows) != 1 or any(rows[0].get(k) != v for k, v in expected.items()):
        raise StoreError(f"the store's result for {what} is missing or belongs to another task: the store is "
                         "damaged; move store.sqlite away and rerun")  # fmt: skip
    return rows[0]


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
            raise argparse.ArgumentTypeError(
                f"must be {'>= ' + str(lo) if value < lo else '<= ' + str(hi)}, got {text}"
            )
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
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers, got {text!r}")
    return values


CONNECT_TIMEOUT["type"] = finite(1e-3, 3600)
