"""docs/outputs.md describes every file, column and key that the commands write.

Each command runs once, in process, at tiny sizes, into a temporary folder; every CSV column, every
JSON key (nested keys as dotted paths, list items merged: ``results.optimal_lr``) and every
``.npz`` array it writes must be a row of the file's section in docs/outputs.md. A section is
``## <command> <file>`` (e.g. ``## surge summary.json``) or, for a file name that only one command
writes, ``## <file>``. A documented key documents everything below it (``options`` covers
``options.dims``).

To cover a new command, add one ``Case`` to ``CASES``: its name as in the headings, and a function
that runs it into a folder.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "outputs.md"


def documented(text: str) -> dict[str, set[str]]:
    """Section heading -> the names in the first column of its table."""
    sections: dict[str, set[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), set())
        elif current is not None and line.startswith("|") and not re.match(r"^\|\s*(name\s*\||-)", line):
            current.add(line.split("|")[1].strip().strip("`").replace("[]", ""))  # cases[].B = cases.B
    return sections


def _keys(obj, prefix: str = "") -> set[str]:
    """Dotted key paths of a JSON value; the items of a list share their parent's path."""
    if isinstance(obj, dict):
        out = set()
        for k, v in obj.items():
            path = f"{prefix}.{k}" if prefix else k
            out |= {path} | _keys(v, path)
        return out
    if isinstance(obj, list):
        return set().union(*(_keys(v, prefix) for v in obj)) if obj else set()
    return set()


def written_names(path: Path) -> set[str]:
    """The columns of a CSV file, the keys of a JSON file, the arrays of an .npz file."""
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            return set(next(csv.reader(f)))
    if path.suffix == ".json":
        return _keys(json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{path.name}: {c}")))
    with np.load(path) as z:
        return set(z.files)


@dataclasses.dataclass(frozen=True)
class Case:
    command: str  # as in the section headings
    run: Callable[[Path, pytest.MonkeyPatch], None]  # writes the command's outputs into the folder
    needs: str | None = None  # a module without which the command cannot run (skipped then)
    group_columns: tuple[str, ...] = ()  # columns the user names (--group-cols): the "(group columns)" row
    variant: str = ""  # tells apart two cases of one command in the test ids


def _ok(status: int) -> None:
    assert status == 0, "the command failed (see its stderr above)"


def run_surge(out: Path, mp) -> None:
    from sims import surge

    _ok(surge.main(["--dims", "20", "--batch-sizes", "1,8,64", "--trials", "200", "--out", str(out), "--quiet",
                    "--no-plot"]))  # fmt: skip


def run_dynamics(out: Path, mp) -> None:
    from sims import dynamics

    _ok(dynamics.main(["--dims", "8", "--optimizers", "sign,adam", "--batch-sizes", "2,8", "--lr-points", "3",
                       "--seeds", "2", "--targets", "0.5", "--further-steps", "2", "--max-steps", "60",
                       "--out", str(out), "--quiet", "--no-plot"]))  # fmt: skip


def run_momentum(out: Path, mp) -> None:
    from sims import momentum

    _ok(momentum.main(["--quick", "--families", "lowrank,powerlaw", "--optimizers", "sign,sgd:0.5,adam:0.9:0.999",
                       "--batch-sizes", "16,64,256", "--lr-points", "4", "--seeds", "2", "--probe-steps", "2",
                       "--probe-states", "1", "--probe-trials", "2", "--max-steps", "300", "--bootstrap", "4",
                       "--out", str(out), "--quiet", "--no-plot"]))  # fmt: skip


def run_fit(out: Path, mp) -> None:
    from sims import fit

    grid = out.parent / f"{out.name}-grid.csv"
    with open(grid, "w") as f:
        f.write("group,seed,lr,batch_size,gain,steps\n")
        for seed in (0, 1):
            for B in (4, 16, 64, 256):
                for lr in (1e-3, 2e-3, 4e-3, 8e-3):
                    gain = 1 - (np.log(lr) - np.log(3e-3 * np.sqrt(B / (16 + B)))) ** 2 + 0.01 * seed
                    f.write(f"a,{seed},{lr},{B},{float(gain)!r},{100 * (1 + 32 / B)!r}\n")
    _ok(fit.main([str(grid), "--loss-col", "gain", "--maximize", "--group-cols", "group", "--seed-col", "seed",
                  "--steps-col", "steps", "--out", str(out), "--quiet", "--no-plot"]))  # fmt: skip


def run_limits(out: Path, mp) -> None:
    from sims import limits

    full = limits.resolve

    def tiny(args):  # the --quick grids, cut further: this test needs the files, not the numbers
        return dataclasses.replace(
            full(args), map_batch_sizes=(1.0, 1e3, 1e6), snr_scales=(0.5, 2.0), bound_dims=(8, 32),
            powerlaw_dims=(16,), corr_dims=16, corr_batch_sizes=(1.0, 1e3), corr_rhos=(1e-3, 0.1),
            ng_batch_sizes=(1, 16), ng_rel_se=0.5, ng_max_draws=1e4, adam_betas=((0.9, 0.999),),
            adam_batch_sizes=(1.0, 100.0), adam_samples=64,
        )  # fmt: skip

    mp.setattr(limits, "resolve", tiny)
    _ok(limits.main(["--quick", "--dims", "16", "--out", str(out), "--quiet", "--no-plot"]))


def run_workloads(out: Path, mp) -> None:
    from sims import workloads

    _ok(workloads.main(["--workload", "gpt", "--demo", "--lrs", "1e-3,3e-3", "--batch-sizes", "2,4,8", "--seeds", "1",
                        "--targets", "5.2", "--further-steps", "2", "--max-steps", "20", "--eval-examples", "8",
                        "--context", "16", "--n-layer", "1", "--d-model", "16", "--n-head", "2",
                        "--grad-examples", "8", "--probes", "2", "--workers", "1", "--out", str(out), "--quiet",
                        "--no-plot"]))  # fmt: skip


def run_bench(out: Path, mp) -> None:
    from sims import bench
    from surgesim.bench import kernels

    small = kernels.bench_dynamics
    mp.setattr(kernels, "bench_dynamics", lambda: small(dims=8, trajectories=2, steps=10, numpy_steps=5,
                                                        repeat=1))  # fmt: skip
    rng = kernels.bench_rng
    mp.setattr(kernels, "bench_rng", lambda n, repeat: rng(1 << 12, 1))
    out.mkdir()
    _ok(bench.main(["--dims", "8", "--trials", "16", "--repeat", "1", "--skip-end-to-end", "--out",
                    str(out / "bench.json")]))  # fmt: skip


def run_bench_gpu(out: Path, mp) -> None:
    from sims import bench_gpu

    out.mkdir()
    _ok(bench_gpu.main(["--dims", "8", "--trials", "64", "--repeat", "1", "--out", str(out / "bench_gpu.json")]))


def run_probe(out: Path, mp) -> None:
    import torch

    from sims import probe
    from surgesim.problem import surge_problem
    from surgesim.workloads import protocol

    problem = out.parent / f"{out.name}-problem.npz"
    surge_problem(12, 0).save(problem)
    tiny = ["--batch-sizes", "1,4", "--draws", "16", "--hessian-examples", "2", "--stats-examples", "8", "--probes",
            "2", "--crit-examples", "2", "--quiet", "--no-plot"]  # fmt: skip
    _ok(probe.main(["--problem", str(problem), "--out", str(out / "problem"), *tiny]))
    ckpt = out.parent / f"{out.name}-cnn.pt"  # a workload state: adds target_loss and results.*
    spec = protocol.RunSpec(workload="cnn", lr=1e-3, batch_size=8, seed=0, targets=(1.0,))
    torch.save({"model": protocol.build_model(spec).state_dict()}, ckpt)
    _ok(probe.main(["--workload", "cnn", "--demo", "--checkpoint", str(ckpt), "--full-gradient-examples", "32",
                    "--threads", "1", "--out", str(out / "cnn"), *tiny]))  # fmt: skip


def run_schedules(out: Path, mp) -> None:
    from sims import schedules

    _ok(schedules.main(["--dims", "16", "--optimizers", "sign", "--seeds", "2", "--tune-seeds", "1",
                        "--max-steps", "300", "--multipliers", "1", "--out", str(out), "--quiet",
                        "--no-plot"]))  # fmt: skip


def run_schedules_cnn(out: Path, mp) -> None:
    from sims import schedules

    _ok(schedules.main(["--workload", "cnn", "--demo", "--lrs", "1e-3", "--batch-sizes", "4,8", "--multipliers", "1",
                        "--seeds", "1", "--targets", "2.2", "--max-steps", "20", "--workers", "1", "--out", str(out),
                        "--quiet", "--no-plot"]))  # fmt: skip


CASES = [
    Case("surge", run_surge),
    Case("dynamics", run_dynamics),
    Case("momentum", run_momentum),
    Case("fit", run_fit, group_columns=("group",)),
    Case("limits", run_limits),
    Case("workloads", run_workloads, needs="torch"),
    Case("bench", run_bench),
    Case("bench_gpu", run_bench_gpu, needs="cupy"),
    Case("probe", run_probe, needs="torch"),
    Case("schedules", run_schedules),
    Case("schedules", run_schedules_cnn, needs="torch", variant="cnn"),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.command}-{c.variant}" if c.variant else c.command for c in CASES])
def test_every_output_is_documented(case: Case, tmp_path, monkeypatch):
    if case.needs and importlib.util.find_spec(case.needs) is None:
        pytest.skip(f"{case.command} needs {case.needs}")
    if case.command == "bench_gpu":
        from surgesim import backend

        try:
            backend.resolve("gpu")
        except ValueError as e:
            pytest.skip(f"no usable GPU: {e}")
    sections = documented(DOC.read_text())
    out = tmp_path / case.command
    case.run(out, monkeypatch)
    files = sorted(p for p in out.rglob("*") if p.suffix in (".csv", ".json", ".npz"))
    assert files, f"{case.command} wrote no data files"
    missing = []
    for path in files:
        heading = next((h for h in (f"{case.command} {path.name}", path.name) if h in sections), None)
        if heading is None:
            missing.append(f"no section '## {case.command} {path.name}' or '## {path.name}'")
            continue
        names = sections[heading] | (set(case.group_columns) if "(group columns)" in sections[heading] else set())
        for name in sorted(written_names(path)):
            parts = name.split(".")
            if not any(".".join(parts[:k]) in names for k in range(1, len(parts) + 1)):
                missing.append(f"{heading}: {name}")
    assert not missing, "docs/outputs.md does not describe:\n" + "\n".join(missing)


def test_sections_follow_the_format():
    text = DOC.read_text()
    tables = re.findall(r"^## (.+)\n(?:(?!## ).*\n)*?\| name \| meaning \| unit \| equation \|\n\|[-| ]+\|\n", text,
                        re.M)  # fmt: skip
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings and sorted(tables) == sorted(headings), set(headings) - set(tables)
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| name |") and not set(line) <= set("|- "):
            assert line.count("|") == 5, f"a row needs exactly 4 cells: {line}"
