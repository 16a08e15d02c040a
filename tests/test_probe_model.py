"""``python -m sims.probe --model FILE.py:FUNCTION`` and ``surgesim.workloads.probe_model``: any
model probed at its weights. The done-when check of issue 21: on a small MLP whose per-example
gradients and Hessian are computed by brute force, lr*(B) within 4 s.e. of the exact optimum
(E[G'V] / E[V'HV] over 20,000 exact minibatches: its
error is 1/30 of the probe's) and B_simple, B_crit within 3 s.e. of their exact
values. Then the example script, and bad input: one ``error:`` line, exit status 2, no outputs."""

from __future__ import annotations

import csv
import json
import math
import runpy
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from _mlp_exact import Exact  # noqa: E402

from sims import probe as sims_probe  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "probe_own_model.py"


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_model_agrees_with_brute_force(tmp_path):
    """About 14 s on the loaded 2-core machine (the probe at two batch sizes, 10% s.e.)."""
    out = tmp_path / "m"
    argv = ["--model", f"{EXAMPLE}:small_mlp", "--batch-sizes", "4,32", "--rel-se", "0.1", "--hessian-examples",
            "16", "--no-plot", "--quiet", "--out", str(out)]  # fmt: skip
    assert sims_probe.main(argv) == 0
    rows = read_csv(out / "probe.csv")
    assert "target_loss" not in rows[0] and "lr_exact" not in rows[0]
    summary = json.loads((out / "summary.json").read_text())
    assert "results" not in summary and "target_loss" not in summary
    ns = runpy.run_path(str(EXAMPLE))
    exact = Exact(*ns["small_mlp"]())
    for r in rows:
        a, sa, b, sb = exact.sign_moments(int(r["batch_size"]), 20_000, seed=int(r["batch_size"]))
        lr, lr_se = a / b, a / b * math.hypot(sa / a, sb / b)  # brute force's own (small) error
        z = (float(r["lr_probe"]) - lr) / math.hypot(float(r["lr_probe_se"]), lr_se)
        assert abs(z) < 4, (r["batch_size"], r["lr_probe"], r["lr_probe_se"], lr, lr_se)
    for key, truth in (("b_simple", exact.b_simple), ("b_crit", exact.b_crit)):
        assert abs(summary[key] - truth) < 3 * summary[f"{key}_se"], (key, summary[key], summary[f"{key}_se"], truth)


def test_example_probes_both_ways(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["probe_own_model.py", "--batch-sizes", "16", "--draws", "16",
                                      "--stats-examples", "32", "--out", "o"])  # fmt: skip
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    assert "peak of the probe" in out and "exit 0" in out
    py, cli = read_csv(tmp_path / "o" / "python_probe.csv"), read_csv(tmp_path / "o" / "cli" / "probe.csv")
    # the same state, options and seeds: the same numbers both ways
    assert [r["lr_probe"] for r in py] == [r["lr_probe"] for r in cli]
    assert [r["lr_gaussian"] for r in py] == [r["lr_gaussian"] for r in cli]


def test_multistep_from_the_command_line(tmp_path):
    out = tmp_path / "t"
    argv = ["--model", f"{EXAMPLE}:small_mlp", "--batch-sizes", "16", "--draws", "16", "--update", "adam",
            "--steps", "3", "--stats-examples", "32", "--crit-examples", "4", "--probes", "2", "--no-plot",
            "--quiet", "--out", str(out)]  # fmt: skip
    assert sims_probe.main(argv) == 0
    (row,) = read_csv(out / "probe.csv")
    assert row["steps"] == "3" and int(row["gradient_examples_probe"]) >= 16 * 3 * 16 * 5
    assert float(row["lr_probe"]) > 0 and float(row["lr_probe_se"]) > 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 3


BAD = """
import torch
import torch.nn.functional as F

def net():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)

def data(n=64):
    return torch.randn(n, 3), torch.randint(0, 2, (n,))

def wrong_tuple():
    return net(), F.cross_entropy

def lengths():
    x, y = data()
    return net(), F.cross_entropy, x, y[:50]

def not_scalar():
    return net(), lambda o, t: F.cross_entropy(o, t, reduction="none"), *data()

def nan_weights():
    m = net()
    with torch.no_grad():
        m.weight[0, 0] = float("nan")
    return m, F.cross_entropy, *data()

def nan_gradient():
    return net(), lambda o, t: F.cross_entropy(o, t) * torch.sqrt(-o.sum() ** 2), *data()

def raises():
    raise RuntimeError("no data here")

def good():
    return net(), F.cross_entropy, *data()
"""


@pytest.fixture(scope="module")
def bad_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "models.py"
    path.write_text(BAD)
    broken = path.parent / "broken.py"
    broken.write_text("import torch\nraise ImportError('a missing dependency')\n")
    return path


@pytest.mark.parametrize(
    "spec, extra, message",
    [
        ("nowhere.py:f", [], "no such file"),
        ("{dir}/broken.py:f", [], "cannot import"),
        ("{file}:missing", [], "no function missing"),
        ("{file}", [], "FILE.py:FUNCTION"),
        ("{file}:raises", [], "raised RuntimeError"),
        ("{file}:wrong_tuple", [], "(model, loss_fn, inputs, targets)"),
        ("{file}:lengths", [], "different lengths"),
        ("{file}:not_scalar", [], "scalar"),
        ("{file}:nan_weights", [], "weights are not finite"),
        ("{file}:nan_gradient", [], "gradient of the loss is not finite"),
        ("{file}:good", ["--beta1", "1.0"], "beta1"),
        ("{file}:good", ["--update", "adam", "--steps", "0"], "--steps"),
        ("{file}:good", ["--steps", "2"], "--update adam"),
        ("{file}:good", ["--targets", "1.0"], "--targets"),
        ("{file}:good", ["--batch-sizes", "128"], "larger than the data set"),
    ],
)
def test_bad_input(bad_file, tmp_path, capsys, spec, extra, message):
    spec = spec.format(file=bad_file, dir=bad_file.parent)
    out = tmp_path / "o"
    code = sims_probe.main(["--model", spec, *extra, "--out", str(out), "--quiet", "--no-plot"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and err.count("\n") == 1, err
    assert message in err, err
    assert not (out / "probe.csv").exists()


def test_module_path_and_python_entry_point(bad_file, monkeypatch):
    monkeypatch.syspath_prepend(str(bad_file.parent))
    from surgesim.workloads import probe_model, probing

    fn = probing.load_model_function("models:good")
    r = probe_model(*fn(), [2, 8], draws=16, stats_examples=16, stats_hessian_examples=4, hessian_examples=4,
                    probes=2, crit_examples=4)  # fmt: skip
    assert [row["batch_size"] for row in r.table] == [2, 8] and r.summary["b_simple"] > 0
    with pytest.raises(ValueError, match="steps"):
        probe_model(*fn(), [2], steps=0, draws=16)
