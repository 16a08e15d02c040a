"""The ``sims`` command-line entry points (``python -m sims.COMMAND``, ``surgesim COMMAND``)."""

import os as _os
import signal as _signal
import sys as _sys


def _interrupted_early(signum: int, frame: object) -> None:  # pragma: no cover - exercised in a subprocess
    """Ctrl-C, SIGTERM or SIGHUP while importing (or at exit): one line, exit status 128 + signal."""
    _os.write(2, b"interrupted: finished results are kept\n")
    _os._exit(128 + signum)


def _guard_startup() -> None:
    """As a command (``python -m sims.X``: argv[0] is "-m" here; or surgesim), end on signals cleanly
    from the first import on (``surgesim.command.run`` takes over), and refuse a bad NUMBA_NUM_THREADS."""
    argv0 = _sys.argv[0] if _sys.argv else ""
    if argv0 != "-m" and _os.path.basename(argv0) not in ("surgesim", "surgesim.exe"):
        return
    threads = _os.environ.get("NUMBA_NUM_THREADS")
    if threads is not None and not (threads.strip().isdigit() and int(threads) > 0):
        _os.write(2, f"error: the environment variable NUMBA_NUM_THREADS={threads!r} must be a positive integer "
                     "(or unset: every core)\n".encode())  # fmt: skip
        _os._exit(2)  # before numba is imported: it would print a traceback (0) or ignore the value (abc)
    for sig in (getattr(_signal, name, None) for name in ("SIGINT", "SIGTERM", "SIGHUP")):
        if sig is not None and _signal.getsignal(sig) is not _signal.SIG_IGN:
            _signal.signal(sig, _interrupted_early)


_guard_startup()
