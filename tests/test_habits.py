"""The checks that keep the code in shape stay wired up (CONTRIBUTING.md, "Checks"): the mypy and
ruff configuration name modules and files that exist, no per-module ``strict = true`` (which mypy
applies to every module), CI runs the doctests, mypy and ruff, and ``scripts/untyped-api`` counts
what its docstring says."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import types
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())
MYPY = CONFIG["tool"]["mypy"]
RUFF = CONFIG["tool"]["ruff"]["lint"]
STRICT_FLAGS = {  # what `mypy --strict` turns on that can be set per module
    "disallow_any_generics", "disallow_subclassing_any", "disallow_untyped_calls", "disallow_untyped_defs",
    "disallow_incomplete_defs", "check_untyped_defs", "disallow_untyped_decorators", "warn_unused_ignores",
    "warn_return_any", "implicit_reexport", "strict_equality", "extra_checks",
}  # fmt: skip


def _own_overrides() -> list[dict]:
    """The overrides tables about surgesim's own modules (not third-party imports)."""
    return [o for o in MYPY["overrides"] if all(m.startswith("surgesim") for m in o["module"])]


def _module_exists(name: str) -> bool:
    path = ROOT / "src" / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_mypy_overrides_name_modules_that_exist():
    # mypy only notes an override that matches nothing; after a rename the debt or strict list
    # would silently stop applying
    tables = _own_overrides()
    assert len(tables) >= 2, "the strict and debt tables are gone from [tool.mypy]"
    for table in tables:
        missing = [m for m in table["module"] if not _module_exists(m)]
        assert not missing, f"[[tool.mypy.overrides]] names modules that do not exist: {missing}"


def test_strict_modules_have_every_strict_flag_and_no_strict_key():
    for table in MYPY["overrides"]:
        assert "strict" not in table, "strict = true in an overrides table turns strict on for every module"
    strict = [t for t in _own_overrides() if t.get("disallow_untyped_defs")]
    assert len(strict) == 1, "one table of strict modules"
    assert set(strict[0]) - {"module"} == STRICT_FLAGS
    assert strict[0]["implicit_reexport"] is False
    assert all(v is True for k, v in strict[0].items() if k not in {"module", "implicit_reexport"})


def test_strict_and_debt_lists_are_disjoint():
    strict = {m for t in _own_overrides() if t.get("disallow_untyped_defs") for m in t["module"]}
    debt = {m for t in _own_overrides() if t.get("ignore_errors") for m in t["module"]}
    assert strict and debt and not strict & debt


def test_ruff_per_file_ignores_name_files_that_exist():
    missing = [p for p in RUFF.get("per-file-ignores", {}) if not (ROOT / p).is_file()]
    assert not missing, f"[tool.ruff.lint.per-file-ignores] names files that do not exist: {missing}"


def test_ci_runs_doctests_mypy_and_ruff():
    steps = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command in ("pytest --doctest-modules --doctest-glob='*.rst' src/surgesim docs", "mypy", "ruff check ."):
        assert command in steps, f".ci/run does not run `{command}`"
        assert f"`{command}`" in (ROOT / "CONTRIBUTING.md").read_text(), command
    assert re.search(r"pip install .*-e '\.\[[a-z,]*\bdev\b", (ROOT / ".ci" / "run").read_text()), "ruff: the dev extra"


@pytest.fixture(scope="module")
def untyped_api() -> types.ModuleType:
    loader = importlib.machinery.SourceFileLoader("untyped_api", str(ROOT / "scripts" / "untyped-api"))
    spec = importlib.util.spec_from_loader("untyped_api", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


SAMPLE = """
__all__ = ["typed", "untyped", "no_return", "Thing"]

def typed(x: int, *args: float, k: str = "", **kw: object) -> int: ...
def untyped(x): ...
def no_return(x: int): ...
def not_listed(x): ...
def _private(x): ...

class Thing:
    def __init__(self, x: int): ...
    def method(self, y) -> None: ...
    @staticmethod
    def static(y) -> None: ...
    @classmethod
    def make(cls) -> "Thing": ...
    def _hidden(self, y): ...
    def __call__(self) -> None: ...
"""


def test_untyped_api_counts_public_functions_without_full_hints(untyped_api, tmp_path, capsys):
    pkg = tmp_path / "pkg"
    (pkg / "_private").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(SAMPLE)
    (pkg / "_private" / "hidden.py").write_text("def f(x): ...\n")
    assert untyped_api.main([str(pkg)]) == 0
    out = capsys.readouterr().out
    # public: typed, untyped, no_return, Thing.__init__/method/static/make/__call__ = 8; without
    # full hints: untyped, no_return, Thing.method, Thing.static = 4; pkg._private is skipped
    assert "   4 of   8  pkg.mod" in out
    assert out.splitlines()[-1].startswith("   4 of   8  ")
    assert untyped_api.main([str(pkg), "--max", "3"]) == 1
    assert untyped_api.main([str(pkg), "-v", "--max", "4"]) == 0
    names = capsys.readouterr().out
    assert [n for n in ("untyped", "no_return", "Thing.method", "Thing.static") if f" {n}\n" in names] == [
        "untyped", "no_return", "Thing.method", "Thing.static"]  # fmt: skip
