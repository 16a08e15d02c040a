"""``surgesim COMMAND [OPTIONS]`` (also ``python -m sims COMMAND``): one entry point for every
command, each ``python -m sims.COMMAND`` with the same options. Adding a command is one line in
``COMMANDS``: its module ``sims.<name>`` must define ``main(argv) -> int``."""

from __future__ import annotations

import importlib
import sys

from sims import _cli
from surgesim.console import tolerant_console

COMMANDS = {
    "surge": "optimal learning rate vs batch size on a quadratic: Monte Carlo and closed forms",
    "dynamics": "multi-step training of sign-SGD / Adam / SGD on a quadratic over lr x batch size",
    "momentum": "Adam's balance point against beta1 and SGD momentum on quadratics, and its predictors",
    "fit": "optimal learning rate and surge / SGD curves fitted to any CSV grid",
    "figures": "regenerate every figure in figures/",
    "limits": "where the paper's approximations hold and where they fail",
    "probe": "Lemma 1 measured at a state: lr*(B) from real minibatches beside eq 9",
    "workloads": "the paper's real workloads (CNN, ResNet-18, small GPT) in PyTorch",
    "bench": "benchmark the kernels against plain NumPy (--compile: JIT compile times, --scaling: cost against d)",
    "bench_dynamics": "benchmark the multi-step dynamics kernel against plain NumPy",
    "bench_gpu": "benchmark the CuPy (GPU) kernels against the CPU kernels",
    "schedules": "learning-rate and batch-size schedules",
    "validate": "the surge on real networks with statistics, every predictor scored against it",
}


def usage() -> str:
    lines = [f"  {name:<{max(map(len, COMMANDS))}}  {what}" for name, what in COMMANDS.items()]
    return ("usage: surgesim [--version] [--help] COMMAND [OPTIONS]\n\ncommands:\n" + "\n".join(lines) + "\n\n"
            "'surgesim COMMAND --help' lists a command's options (the same as 'python -m sims.COMMAND').")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run ``surgesim COMMAND [OPTIONS]``; its exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:  # a usage error: usage and one error line on stderr, exit status 2
        print(usage() + "\nerror: no command given; choose one of the commands above", file=sys.stderr)
        return 2
    if args[0] in ("-h", "--help", "--version"):
        with tolerant_console():  # surgesim --help | head: the reader may go first
            print(f"surgesim {_cli.version()}" if args[0] == "--version" else usage(), flush=True)
        return 0
    name = args[0]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; choose from {', '.join(COMMANDS)} (see surgesim --help)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        module = importlib.import_module(f"sims.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"sims.{name}":
            raise
        print(f"error: command {name!r} is not available in this installation (no module sims.{name})", file=sys.stderr)
        return 2
    return module.main(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
