"""The ``sims`` command-line entry points (``python -m sims.COMMAND``, ``surgesim COMMAND``)."""

import os as _os
import signal as _signal
import sys as _sys


def _interrupted_early(signum, frame) -> None:  # pragma: no cover - exercised in a subprocess
    """Ctrl-C, SIGTERM or SIGHUP while the command is still importing: one line, no traceback,
    exit status 128 + the signal's number (also after the command, while Python shuts down)."""
    _os.write(2, b"interrupted: finished results are kept\n")
    _os._exit(128 + signum)


def _guard_startup() -> None:
    """Started as a command (``python -m sims.X`` sets argv[0] to "-m" while it imports this
    package; the console script is named surgesim), the signals that end a command do so cleanly
    from the first import on; ``sims._cli.run`` takes over once the command runs. A malformed
    NUMBA_NUM_THREADS is refused before numba reads it."""
    argv0 = _sys.argv[0] if _sys.argv else ""
    if argv0 != "-m" and _os.path.basename(argv0) not in ("surgesim", "surgesim.exe"):
        return
    threads = _os.environ.get("NUMBA_NUM_THREADS")
    if threads is not None and not (threads.strip().isdigit() and int(threads) > 0):
        _os.write(2, f"error: the environment variable NUMBA_NUM_THREADS={threads!r} must be a positive integer "
                     "(or unset: every core)\n".encode())  # fmt: skip
        _os._exit(2)  # before numba is imported: it would print a traceback (0) or ignore the value (abc)
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(_signal, name, None)
        if sig is not None and _signal.getsignal(sig) is not _signal.SIG_IGN:
            _signal.signal(sig, _interrupted_early)


_guard_startup()
