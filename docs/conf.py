"""Sphinx configuration of surgesim's API reference (built by ``scripts/build-docs``)."""

from __future__ import annotations

import os
import sys
from importlib import metadata

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path[:0] = [os.path.join(_ROOT, "src"), _ROOT]  # this tree's surgesim and sims, installed or not

project = "surgesim"
author = "surgesim contributors"
try:
    release = metadata.version("surgesim")
except metadata.PackageNotFoundError:  # building from a tree that is not installed
    release = "0+unknown"

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
# Docstrings are Google style (Args:, Returns:); napoleon turns them into fields.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Optional dependencies: the reference documents the modules without importing them.
autodoc_mock_imports = ["torch", "cupy", "distributed", "dask"]
nitpicky = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = f"surgesim {release}"
version = release


# The docstrings are written to read well as plain text (``help()``): ASCII formulas with |x| for
# absolute values and indented formula blocks. Before napoleon reads them, make that valid
# reStructuredText without changing the source: escape | outside ``literals``, turn an indented
# block that follows a paragraph into a literal block (the paragraph ends in "::"), and put a
# blank line before a list that directly follows a paragraph.
def _as_rest(app, what, name, obj, options, lines: list[str]) -> None:
    def indent(s: str) -> int:
        return len(s) - len(s.lstrip())

    def bullet(s: str) -> bool:
        return s.lstrip().startswith(("- ", "* "))

    out: list[str] = []
    in_list = False
    for line in lines:
        parts = line.split("``")
        parts[::2] = [p.replace("|", r"\|") for p in parts[::2]]
        line = "``".join(parts)
        if not line.strip():
            in_list = False
        elif bullet(line):
            if out and out[-1].strip() and not in_list:
                out.append("")
            in_list = True
        elif out and not out[-1].strip() and len(out) >= 2 and out[-2].strip() and not in_list:
            # first line of a block after a blank line: deeper than the paragraph before it?
            k = len(out) - 2
            if indent(line) > indent(out[k]) and not out[k].rstrip().endswith("::") and not line.lstrip().startswith(
                (">>>", ":")
            ):
                out[k] = out[k].rstrip()[:-1] + "::" if out[k].rstrip().endswith(":") else out[k].rstrip() + " ::"
        out.append(line)
    lines[:] = out


def setup(app) -> None:
    app.connect("autodoc-process-docstring", _as_rest, priority=400)
