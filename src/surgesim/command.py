"""The life of one command-line command: the one top-level handler ``run`` that turns a command's
body into an exit status.

``run(main)`` guarantees:

- outputs are written only by a run that succeeded, atomically: the output directories opened
  with ``open_output`` during the run are staged and committed when ``main`` returns 0; a refused
  or failed run leaves every file in them byte-identical (``surgesim.outputs.OutputDir``);
- any failure is one line ``error: ...`` on stderr with exit status 2 (bad input, memory, disk,
  network, a damaged store), 1 for failed sweep tasks and for an internal bug (with a hint to
  report it; ``SURGESIM_TRACEBACK=1`` shows the traceback), 128 + the signal's number for Ctrl-C,
  SIGTERM and SIGHUP (``Interrupted``);
- warnings raised during the run are held back and printed (one ``warning:`` line each) only
  after a successful run, never before an error line (``warn``);
- a console that has gone (a closed pipe, a hung-up terminal) fails nothing (``surgesim.console``).

The caller may pass ``translate``: its own wording (exit status, message) of some failures, e.g.
naming the command-line option behind a library error (``option_error``); the library's own errors
never name one.

Below ``run``, what every command checks and opens before its work, written once: its output
directory or file (``out_dir``, ``out_file``, ``save_options``), its memory (``need_memory``), its
integer sizes (``check_int``), its Dask scheduler (``checked_scheduler``), PyTorch where it trains
(``torch_module``), and a library's refusal of an option as a usage error naming the flag
(``flag_error``). Each raises ``UsageError``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import functools
import importlib
import json
import logging
import os
import re
import signal
import sqlite3
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from .console import Console, tolerant_console
from .outputs import CommitIncomplete, OutputDir

__all__ = ["run", "open_output", "warn", "sub_command", "one_line", "version", "UsageError", "Reported",
           "Interrupted", "ISSUES", "option_error", "flag_error", "flag_checked", "out_dir", "out_opener", "out_file",
           "save_options", "say_if_compiling", "need_memory", "scheduler_address", "checked_scheduler", "check_int",
           "torch_module"]  # fmt: skip

_T = TypeVar("_T")

ISSUES = "https://github.com/surgesim/surgesim/issues"
MESSAGE_LIMIT = 400  # characters of an error message shown (a bad 200,000-character field is cut)

Translate = Callable[[BaseException], "tuple[int, str] | None"]

# The output directories opened by the command that ``run`` is running (committed or discarded
# when it ends).
_open_outputs: list[OutputDir] = []
# What a command running another is doing (``sub_command``): the sub-command's error line names it.
_context: list[str] = []
_held: list[str] = []  # warning lines of the running command, printed only if it succeeds


class UsageError(Exception):
    """Bad input found after parsing: printed as one ``error:`` line, exit status 2."""


class Reported(Exception):
    """A failure that a sub-command (a command running another) has already reported on stderr:
    ends the command with its exit status and no second line."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exit status {code}")
        self.code = code


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled as Ctrl-C is: one line, exit status 128 + the signal's number,
    staged outputs deleted, finished results kept."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def sub_command(what: str) -> Iterator[None]:
    """Run another command inside this one: its ``error:`` line starts with ``what``."""
    _context.append(what)
    try:
        yield
    finally:
        _context.pop()


def version() -> str:
    """The installed surgesim version ("0+unknown" in a source tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("surgesim")
    except PackageNotFoundError:
        return "0+unknown"


def one_line(message: object) -> str:
    """The message on one line; a long one is cut in its middle, so that its end (the exception
    of a failed task, the fix) is kept."""
    text = " ".join(str(message).split())
    if len(text) <= MESSAGE_LIMIT:
        return text
    tail = MESSAGE_LIMIT // 3
    return text[: MESSAGE_LIMIT - tail] + " ... " + text[-tail:]


def warn(message: str) -> None:
    """A ``warning: ...`` line for the user, printed when the command has succeeded (never before
    an error line)."""
    _held.append(one_line(message))


def open_output(path: str, command: str | None = None, inputs: dict | None = None) -> OutputDir:
    """An ``OutputDir`` opened (created and locked) for the running command: committed when it
    succeeds, discarded otherwise."""
    out = OutputDir(path, command=command, inputs=inputs)
    out.open()
    _open_outputs.append(out)
    return out


def classify(exc: BaseException) -> tuple[int, str]:
    """(exit status, message) of a failure that ends a command."""
    from .sweep import StoreError, SweepError

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


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


_TERMINATING = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
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


def run(main: Callable[[], int | None], translate: Translate | None = None) -> int:
    """Run a command's body under the shared handler (see the module docstring); its exit status."""
    if not isinstance(sys.stdout, Console):  # the outermost command: a lost console fails nothing
        with tolerant_console():
            return run(main, translate)
    code = 1
    held = len(_held)
    caught: list[warnings.WarningMessage] = []
    mine = len(_open_outputs)  # a command may run another: each owns its own outputs
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
                        code = _report(exc, translate)
                    if code == 0:
                        try:  # every check of the commit comes before its one commit point
                            for out in _open_outputs[mine:]:
                                out.commit()
                        except Exception as exc:  # noqa: BLE001 - an error line, whatever failed
                            done = isinstance(exc, CommitIncomplete)  # after the commit point
                            code = _report(exc, translate, "" if done else "cannot write the outputs: ")
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


def _report(exc: BaseException, translate: Translate | None, prefix: str = "") -> int:
    """Print a failure's one ``error:`` line; returns its exit status."""
    if os.environ.get("SURGESIM_TRACEBACK"):
        traceback.print_exception(exc)
    code, message = (translate and translate(exc)) or classify(exc)
    print(f"error: {''.join(c + ': ' for c in _context)}{prefix}{one_line(message)}", file=sys.stderr)
    return code


class _DashboardLine(logging.Handler):
    """The library's log record of a Dask dashboard address (a ``local:N`` scheduler) as one line
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
    warnings.formatwarning = lambda message, category, *a, **k: f"warning: {one_line(str(message))}\n"
    try:
        for w in caught:
            key = (w.category, str(w.message))
            if key not in seen:
                seen.add(key)
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    finally:
        warnings.formatwarning = original


# The checks every command makes before its work, written once: each raises UsageError naming
# the command-line option as the user wrote it.


def option_error(exc: BaseException) -> tuple[int, str] | None:
    """The (exit status, error line) of a library error that came from an option, naming the
    option; None for any other error (``surgesim.command.run``'s ``translate``)."""
    from .backend import BackendUnavailable
    from .sweep import SchedulerTimeout, StoreMismatch

    if isinstance(exc, StoreMismatch):  # a rerun into the --out of another run
        return 2, (f"--out {exc.path.parent} holds the results of a different sweep: choose another --out, or delete "
                   f"{exc.path} to start over ({exc.difference})")  # fmt: skip
    if isinstance(exc, BackendUnavailable):
        return 2, f"--backend {exc.backend}: {exc.reason}"
    if isinstance(exc, SchedulerTimeout):
        return 2, str(exc).replace("connect_timeout sets", "connect_timeout / --connect-timeout sets")
    return None


def flag_error(exc: ValueError) -> UsageError:
    """A library's refusal of an option (e.g. ``surgesim.schedule_study.resolve_schedule_options``)
    as the command's usage error: each option it names as `key` becomes the flag --key."""
    return UsageError(re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: "--" + m[1].replace("_", "-"), str(exc)))


def out_dir(path: str, command: str | None = None, inputs: dict | None = None, options: Any = None) -> OutputDir:
    """The command's output directory, created and locked (``surgesim.command.open_output``): write
    outputs to ``out / NAME`` (committed all at once when the command succeeds), a resumable store to
    ``out.final(NAME)``. Call it after every check, inside ``run``. ``command`` (e.g. "sims.fit") and
    ``inputs`` (a JSON-serialisable dict) go to its manifest: another command's directory, or a rerun
    with other inputs, is refused. ``options`` (a dataclass), if given, is saved as options.json."""
    if path is None or str(path).strip() == "":
        raise UsageError("--out must be a non-empty path")
    out = open_output(path, command=command, inputs=inputs)
    if options is not None:
        save_options(options, out / "options.json")
    return out


def out_opener(path: str, command: str, options: Any = None) -> Callable[[], OutputDir]:
    """``out_dir(path, command, options=options)`` for a library that opens the output directory
    itself after its own checks (e.g. ``surgesim.surge.run_surge``): opened on the first call, the
    same directory on every later call."""
    return functools.cache(lambda: out_dir(path, command, options=options))


def flag_checked(check: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """``check(*args, **kwargs)`` (a library's resolution of a command's options), its refusal
    (ValueError) as ``flag_error``'s usage error naming the flag."""
    try:
        return check(*args, **kwargs)
    except ValueError as exc:
        raise flag_error(exc) from None


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
    from .outputs import write_json

    write_json(dataclasses.asdict(opts), path)


def say_if_compiling(*modules: Any, quiet: bool = False) -> None:
    """Say, before a first run compiles them, that the modules' Numba kernels are not cached yet."""
    from ._jit import uncached_kernels

    missing = 0 if quiet else uncached_kernels(*modules)
    if missing:
        print(f"compiling {missing} kernels for this machine (first run only: later runs load them from the "
              "cache)...", file=sys.stderr, flush=True)  # fmt: skip


def need_memory(nbytes: float, what: str) -> None:
    """Refuse a run whose arrays would need more memory than the machine has available."""
    from .preflight import check_memory

    try:
        check_memory(nbytes, what)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def scheduler_address(scheduler: str | None) -> str | None:
    """The scheduler a command's tasks run on: ``--scheduler``, else ``DASK_SCHEDULER_ADDRESS``,
    else None (this process). Check it first with ``surgesim.sweep.check_scheduler``."""
    return scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None


def checked_scheduler(scheduler: str | None, connect_timeout: float) -> str | None:
    """``scheduler_address(scheduler)``, checked first (``surgesim.sweep.check_scheduler``: a bad
    ``--scheduler`` or ``DASK_SCHEDULER_ADDRESS`` is refused before any work)."""
    from .sweep import check_scheduler

    check_scheduler(scheduler, connect_timeout)
    return scheduler_address(scheduler)


def check_int(flag: str, value: int, lo: int, hi: int) -> None:
    """Refuse an integer option outside [lo, hi] (sizes that would not fit in memory or time)."""
    if value < lo:
        raise UsageError(f"{flag} must be >= {lo}, got {value}")
    if value > hi:
        raise UsageError(f"{flag} must be <= {hi}, got {value}")


def torch_module(name: str, hint: str = "") -> ModuleType:
    """The library module ``name`` that needs PyTorch, imported; without PyTorch a usage error:
    the ImportError's message, then ``hint`` (e.g. " (sims.probe needs PyTorch: ...)")."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise UsageError(f"{exc}{hint}") from None
