"""The examples in the public API's docstrings (``surgesim.*``) run and give what they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import surgesim


def _modules() -> list[str]:
    names = [surgesim.__name__]
    names += [m.name for m in pkgutil.walk_packages(surgesim.__path__, prefix="surgesim.")]
    return sorted(names)


MODULES = _modules()


OPTIONAL = {"torch", "distributed", "dask", "cupy", "PIL"}  # extras a module may need (pyproject.toml)


def _examples(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    return [t for t in doctest.DocTestFinder().find(module, name) if t.examples]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    try:
        tests = _examples(name)
    except ModuleNotFoundError as e:  # an optional extra not installed (a failure in CI: conftest.py)
        if e.name not in OPTIONAL:
            raise
        pytest.skip(f"{name} needs {e.name}")
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} fail (doctest output above)"


def test_the_public_api_has_examples():
    # guards against the doctests silently disappearing (a module renamed, a finder that sees nothing)
    pytest.importorskip("torch")  # the workloads modules import it
    n = sum(len(t.examples) for name in MODULES for t in _examples(name))
    assert n >= 25, n  # 29 when written
