"""Probe your own network: the optimal learning rate per batch size at its current weights
(Lemma 1 measured), McCandlish's B_simple and B_crit, both from Python and from the command line.

    python examples/probe_own_model.py --out runs/own-model
    python -m sims.probe --model examples/probe_own_model.py:small_mlp          # the same, as a command
    python -m sims.probe --model examples/probe_own_model.py:small_mlp --update adam --steps 8

What ``--model FILE.py:FUNCTION`` needs is a function like ``small_mlp`` below: it returns
``(model, loss_fn, inputs, targets)``, the model at the weights to probe, the mean loss of a batch
(as torch's cross_entropy) and the data set as two tensors with the example on the first axis.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def small_mlp(n: int = 2000, width: int = 12, seed: int = 0):
    """A 6 -> ``width`` -> 3 tanh MLP (123 parameters at width 12, float64) at its initial weights,
    on ``n`` examples labelled by a noisy linear teacher."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 6, generator=g, dtype=torch.float64)
    W = torch.randn(6, 3, generator=g, dtype=torch.float64)
    Y = torch.multinomial(torch.softmax(X @ W, 1), 1, generator=g).squeeze(1)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, width), nn.Tanh(), nn.Linear(width, 3)).double()
    return model, F.cross_entropy, X, Y


def mlp_100k(n: int = 5000, seed: int = 0):
    """A 784 -> 128 -> 10 ReLU MLP (101,770 parameters, float32) at its initial weights on ``n``
    random 784-pixel examples labelled by a random teacher: the README's speed measurement."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 784, generator=g)
    Y = torch.multinomial(torch.softmax(X @ torch.randn(784, 10, generator=g) / 10, 1), 1, generator=g).squeeze(1)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    return model, F.cross_entropy, X, Y


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    p.add_argument("--batch-sizes", default="1,4,16,64,256")
    p.add_argument("--rel-se", type=float, default=0.1)
    p.add_argument("--draws", type=int, help="fixed draws per batch size instead of --rel-se (a quick look)")
    p.add_argument("--stats-examples", type=int, default=256)
    p.add_argument("--out", default="runs/own-model")
    args = p.parse_args(argv)
    sizes = [int(b) for b in args.batch_sizes.split(",")]

    # 1. From Python: probe_model returns a table (one dict per batch size) and a summary.
    from surgesim.workloads import probe_model

    plan = {"draws": args.draws} if args.draws else {"rel_se": args.rel_se}
    result = probe_model(*small_mlp(), sizes, stats_examples=args.stats_examples, **plan)
    print(f"{'B':>6} {'lr probe':>11} {'+- s.e.':>9} {'gaussian':>11} {'independent':>11}")
    for r in result.table:
        print(f"{r['batch_size']:>6} {r['lr_probe']:>11.4g} {r['lr_probe_se']:>9.2g} {r['lr_gaussian']:>11.4g} "
              f"{r['lr_independent']:>11.4g}")  # fmt: skip
    s = result.summary
    print(f"peak of the probe: B = {s['peak_batch_size_probe']:.3g}; B_simple {s['b_simple']:.3g} +- "
          f"{s['b_simple_se']:.2g}, B_crit {s['b_crit']:.3g} +- {s['b_crit_se']:.2g}")  # fmt: skip
    Path(args.out).mkdir(parents=True, exist_ok=True)
    result.to_csv(Path(args.out) / "python_probe.csv")

    # 2. From the command line (here called in-process): the same measurement, resumable.
    from sims import probe as sims_probe

    plan_argv = ["--draws", str(args.draws)] if args.draws else ["--rel-se", str(args.rel_se)]
    code = sims_probe.main(["--model", f"{Path(__file__).resolve()}:small_mlp", "--batch-sizes", args.batch_sizes,
                            *plan_argv, "--stats-examples", str(args.stats_examples), "--out",
                            str(Path(args.out) / "cli"), "--no-plot", "--quiet"])  # fmt: skip
    print(f"sims.probe --model: exit {code}, wrote {Path(args.out) / 'cli'}/probe.csv, summary.json")


if __name__ == "__main__":
    main()
