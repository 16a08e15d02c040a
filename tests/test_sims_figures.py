"""``python -m sims.figures --quick`` writes every figure, non-empty."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sims import figures

ROOT = Path(__file__).resolve().parents[1]


def test_quick_mode_writes_every_figure(tmp_path):
    pytest.importorskip("torch")  # fig6 trains a network
    assert figures.main(["--quick", "--out", str(tmp_path), "--quiet"]) == 0
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    for name in ("fig1_surge", "fig2_erf", "fig3_families", "fig4_loss"):
        assert f"{name}.png" in pngs and (tmp_path / f"{name}.pdf").stat().st_size > 1000
    for prefix, least in (("fig5_dynamics_grid_", 3), ("fig6_workload_fit_", 1), ("fig7_limits_", 5)):
        assert sum(n.startswith(prefix) for n in pngs) >= least, prefix
    assert "fig5_dynamics_peak_vs_target.png" in pngs
    assert all((tmp_path / n).stat().st_size > 10_000 for n in pngs)


def test_only_makes_the_subset(tmp_path):
    assert figures.main(["--quick", "--only", "fig2", "--out", str(tmp_path), "--quiet"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig2_erf.pdf", "fig2_erf.png"]


def test_unknown_figure_is_an_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sims.figures", "--only", "fig99", "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "fig99" in r.stderr
