"""The ``HessianOperator`` protocol: every method of every operator against the dense matrix M it
represents (brute force), and no module of the package but ``hessian.py`` branching on the
operator classes.

Tolerances: products at rtol 1e-12 (the same sums in another order); solves at a residual of 1e-10
relative to |M| |x| (h >= 0.1 keeps the test matrices well conditioned); the power iteration of
the structured kind at rel 1e-9 of eigvalsh (it stops at a relative change of 1e-12 per product).
"""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest
from _operators import random_operator as shared_random_operator
from hypothesis import given
from hypothesis import strategies as st

import surgesim
from surgesim.hessian import Dense, Diagonal, DiagonalPlusLowRank, Hessian, HessianOperator, as_hessian
from surgesim.kernels.hessian_products import DENSE, DIAG_LOWRANK, hessian_arrays
from surgesim.problem import QuadraticProblem

KINDS = ("dense", "diagonal", "lowrank")


def random_operator(kind: str, d: int, seed: int, k: int = 3) -> HessianOperator:
    """An operator of ``kind`` with h in (0.1, 2): positive definite, so solves are defined."""
    return shared_random_operator(kind, d, seed, k, h_low=0.1, tag=25)


operators = st.builds(
    random_operator, st.sampled_from(KINDS), st.integers(1, 40), st.integers(0, 2**32 - 1), st.integers(1, 5)
)


@given(operators, st.integers(0, 2**32 - 1))
def test_linear_algebra_methods_match_the_dense_matrix(op, seed):
    M = op.to_dense()
    d = op.dim
    rng = np.random.default_rng(seed)
    scale = np.abs(M).sum()
    S = rng.standard_normal((d, d))
    assert op.trace_product(S) == pytest.approx(np.trace(M @ S), rel=1e-12, abs=1e-12 * scale * np.abs(S).max())
    i0 = int(rng.integers(0, d))
    i1 = int(rng.integers(i0, d + 1))
    np.testing.assert_allclose(op.rows(i0, i1), M[i0:i1], rtol=1e-12, atol=1e-12 * scale)
    assert op.rows(i0, i1).shape == (i1 - i0, d)
    b = rng.standard_normal(d)
    x = op.solve(b)
    np.testing.assert_allclose(x, np.linalg.solve(M, b), rtol=1e-9, atol=1e-12)
    assert np.abs(M @ x - b).max() <= 1e-10 * scale * max(np.abs(x).max(), 1.0)
    assert op.max_eigenvalue() == pytest.approx(np.linalg.eigvalsh(M)[-1], rel=1e-9)


@given(operators)
def test_parts_and_kernel_arrays_reproduce_the_dense_matrix(op):
    """H = diag(h) + U U' + D with the operator's parts, and the dynamics kernel's arrays."""
    M = op.to_dense()
    d = op.dim
    h, U, D = op.diagonal_part(), op.low_rank_factor(), op.dense_part()
    assert h.shape == (d,) and U.ndim == 2 and U.shape[0] == d
    assert D.shape in ((d, d), (0, 0))
    np.testing.assert_allclose(np.diag(h) + U @ U.T + (D if D.size else 0.0), M, rtol=1e-12, atol=1e-12)
    kind, kh, ut, hd = hessian_arrays(op)
    if kind == DENSE:
        assert kh.size == 0 and ut.size == 0
        np.testing.assert_array_equal(hd, M)
    else:
        assert kind == DIAG_LOWRANK and hd.size == 0
        np.testing.assert_allclose(np.diag(kh) + ut.T @ ut, M, rtol=1e-12, atol=1e-12)
    for a in (kh, ut, hd):
        assert a.dtype == np.float64 and a.flags["C_CONTIGUOUS"]


@given(operators)
def test_description_files_and_checks_agree_with_the_dense_matrix(op):
    M = op.to_dense()
    d = op.dim
    assert isinstance(op, HessianOperator) and isinstance(op, Hessian) and as_hessian(op) is op
    if op.is_diagonal:
        np.testing.assert_array_equal(M, np.diag(np.diagonal(M)))
    assert op.with_psd_check() is op  # every test operator is already checked
    named = op.named_arrays()
    if "H" in named:
        assert list(named) == ["H"] and op.describe() == "dense"
        np.testing.assert_array_equal(named["H"], M)
    else:
        U = named.get("h_factor", np.zeros((d, 0)))
        assert list(named) == ["h_diag", "h_factor"][: 1 + ("h_factor" in named)]
        assert op.describe() == ("diagonal" if U.shape[1] == 0 else f"diagonal + rank {U.shape[1]}")
        np.testing.assert_allclose(np.diag(named["h_diag"]) + U @ U.T, M, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_a_problem_file_holds_the_named_arrays(kind, tmp_path):
    op = random_operator(kind, 7, 1)
    p = QuadraticProblem(np.ones(7), np.ones(7), op)
    p.save(tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz") as f:
        assert f.files == ["mu", "sigma", *op.named_arrays()]
        for name, a in op.named_arrays().items():
            np.testing.assert_array_equal(f[name], a)
    q = QuadraticProblem.load(tmp_path / "p.npz")
    assert type(q.hessian) is type(op) and q.digest() == p.digest()
    assert p.describe() == f"d = 7, H {op.describe()}"


def test_dense_psd_check_runs_on_request_and_problems_request_it():
    unchecked = Dense(-np.eye(2), check_psd=False)
    with pytest.raises(ValueError, match="positive semi-definite"):
        unchecked.with_psd_check()
    with pytest.raises(ValueError, match="positive semi-definite"):
        QuadraticProblem(np.ones(2), np.ones(2), unchecked)
    checked = Dense(np.eye(2), check_psd=False).with_psd_check()
    assert isinstance(checked, Dense) and checked.check_psd


def test_solve_refuses_a_singular_matrix_and_a_non_positive_diagonal_part():
    with pytest.raises(ValueError, match="H is singular"):
        Dense(np.zeros((2, 2))).solve(np.ones(2))
    with pytest.raises(ValueError, match=r"diagonal part must be > 0 .* min is 0"):
        Diagonal([1.0, 0.0]).solve(np.ones(2))
    with pytest.raises(ValueError, match=r"diagonal part must be > 0"):
        DiagonalPlusLowRank([1.0, 0.0], np.ones((2, 1))).solve(np.ones(2))


def test_the_kernel_arrays_refuse_what_is_not_an_operator():
    with pytest.raises(TypeError, match="H must be a Hessian operator .* got ndarray"):
        hessian_arrays(np.eye(2))  # type: ignore[arg-type]


_CLASSES = {"Dense", "Diagonal", "DiagonalPlusLowRank"}


def _names(node: ast.AST) -> set[str]:
    """Every name and attribute mentioned in ``node`` (``hessian.Dense`` gives hessian, Dense)."""
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            out.add(n.id)
        elif isinstance(n, ast.Attribute):
            out.add(n.attr)
    return out


def _is_type_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "type"


def type_branches(source: str) -> list[int]:
    """Lines of ``isinstance``/``issubclass`` calls naming an operator class, of comparisons of
    ``type(...)`` with one (``type(H) is Dense``), and of dicts keyed by one (``{Dense: ...}``)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("isinstance", "issubclass") and len(node.args) == 2 and _names(node.args[1]) & _CLASSES:
                lines.append(node.lineno)
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_is_type_call(x) for x in sides) and any(_names(x) & _CLASSES for x in sides):
                lines.append(node.lineno)
        elif isinstance(node, ast.Dict) and any(k is not None and _names(k) & _CLASSES for k in node.keys):
            lines.append(node.lineno)
    return lines


def test_the_branch_finder_finds_branches():
    found = type_branches(
        "if isinstance(H, Dense): pass\n"
        "x = isinstance(H, (Diagonal, DiagonalPlusLowRank))\n"
        "y = isinstance(H, hessian.Dense | Diagonal)\n"
        "z = type(H) is Dense\n"
        "w = {Dense: 'dense'}.get(type(H))\n"
        "ok = isinstance(H, HessianOperator)\n"
        "ok2 = isinstance(x, DenseThing)\n"
    )
    assert found == [1, 2, 3, 4, 5]


def test_no_module_but_hessian_branches_on_the_operator_type():
    """The operators carry what the library needs (issue 25): outside ``hessian.py`` nothing in the
    package or the commands (sims/) tests which class a Hessian is (``isinstance(H,
    HessianOperator)`` at an input boundary is allowed)."""
    root = pathlib.Path(surgesim.__file__).parent
    commands = pathlib.Path(__file__).resolve().parents[1] / "sims"
    paths = sorted(root.rglob("*.py")) + sorted(commands.glob("*.py"))
    assert len(paths) > 50 and root / "estimate.py" in paths  # the walk is not vacuous
    offenders = []
    for path in paths:
        if path == root / "hessian.py":
            continue
        for line in type_branches(path.read_text()):
            offenders.append(f"{path.parent.name}/{path.name}:{line}")
    assert not offenders, "type branches on the Hessian operators outside hessian.py: " + ", ".join(offenders)


@pytest.mark.parametrize("kind", KINDS)
def test_the_gpu_bench_one_step_runs_every_kind_as_the_kernels_do(kind):
    """``bench.gpu._one_step`` on the CPU module (numpy arrays) gives ``one_step_moments``'s (a, b)
    for every kind (it read ``H.factor`` of a diagonal H before, an AttributeError)."""
    from surgesim.bench.gpu import _one_step
    from surgesim.kernels import one_step_moments, onestep

    rng = np.random.default_rng(3)
    p = QuadraticProblem(rng.normal(0, 0.1, 9), rng.uniform(0.5, 2.0, 9), random_operator(kind, 9, 2))
    run, result = _one_step(onestep, np, lambda: None, p, "sign", 4, 64)
    run()
    a, b = result()
    want_a, want_b = one_step_moments(p, 4, 64, seed=0)
    np.testing.assert_array_equal(a, want_a)
    np.testing.assert_array_equal(b, want_b)
