"""The documentation points at things that exist: commands the README tells users to run, README
sections that docstrings name, the API reference's coverage of the package, and the installed
pointers of ``help(surgesim)`` (issue 24, "Docs")."""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import re
from pathlib import Path

import pytest

import surgesim
from sims import __main__ as entry

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _readme_commands() -> set[str]:
    return set(re.findall(r"python -m sims\.([a-z_]+)", README)) | set(re.findall(r"`surgesim ([a-z_]+)", README))


def test_every_command_the_readme_runs_is_listed_by_surgesim_help():
    commands = _readme_commands()
    assert {"surge", "bench_dynamics"} <= commands  # the pattern still finds them: the loop is not vacuous
    usage = entry.usage()
    for name in sorted(commands):
        assert name in entry.COMMANDS, f"README runs sims.{name}, which surgesim --help does not list"
        assert re.search(rf"^\s+{name}\s", usage, re.M), name
        assert callable(importlib.import_module(f"sims.{name}").main)


def test_every_surgesim_command_is_a_module_with_main():
    for name in entry.COMMANDS:
        assert callable(importlib.import_module(f"sims.{name}").main), name


def _readme_sections() -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^#+ (.+)$", README, re.M)]


def test_readme_sections_named_in_docstrings_exist():
    sections = _readme_sections()
    named = []
    for path in [*ROOT.glob("sims/*.py"), *ROOT.glob("src/surgesim/**/*.py"), *ROOT.glob("examples/*.py")]:
        text = " ".join(path.read_text().split())  # names may wrap across lines
        named += [(path.name, m) for m in re.findall(r'README,? section "([^"]+)"', text)]
    assert named, "no docstring names a README section: the pattern no longer matches"
    for where, name in named:
        assert any(s.startswith(name) for s in sections), f"{where} names README section {name!r}, which does not exist"


def test_api_reference_documents_every_public_module():
    documented = set()
    for rst in (ROOT / "docs").rglob("*.rst"):
        documented |= set(re.findall(r"^\.\. automodule:: (\S+)", rst.read_text(), re.M))
    public = {"surgesim"}
    for info in pkgutil.walk_packages(surgesim.__path__, "surgesim."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts) or parts[1] == "reference":
            continue
        public.add(info.name)
    missing = {m for m in public if m not in documented and not any(d.startswith(m + ".") for d in documented)}
    assert not missing, f"modules missing from docs/api: {sorted(missing)}"


def test_help_surgesim_points_to_installed_documentation():
    doc = surgesim.__doc__
    assert "help(surgesim.theory)" in doc and "surgesim --help" in doc
    # the README is reachable from an installed package, as the docstring says
    assert "metadata('surgesim')['Description']" in doc
    description = importlib.metadata.metadata("surgesim")["Description"]
    if description is None:  # pragma: no cover - metadata without a long description
        pytest.skip("this installation's metadata has no description")
    assert description.lstrip().startswith("# surgesim")


def test_torch_install_hint_is_the_command_that_works():
    from surgesim._install import TORCH

    assert "torch==2.13.0" in TORCH and "'.[train]'" in TORCH
    for path in [*ROOT.glob("sims/*.py"), *ROOT.glob("src/surgesim/**/*.py")]:
        text = path.read_text()
        assert "surgesim[train]" not in text, f"{path.name}: pip install 'surgesim[train]' is not how to install"


def _sections(text: str) -> dict[str, list[str]]:
    """docs/outputs.md: heading -> the first cells of its table rows (as tests/test_outputs_doc.py)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = out.setdefault(line[3:].strip(), [])
        elif current is not None and line.startswith("| ") and not re.match(r"^\|\s*(name\s*\||-)", line):
            current.append(line.split("|")[1].strip().strip("`"))
    return out


def _json_keys(obj, prefix: str = "") -> set[str]:
    if isinstance(obj, dict):
        return set().union(*({f"{prefix}{k}"} | _json_keys(v, f"{prefix}{k}.") for k, v in obj.items()))
    if isinstance(obj, list):
        return set().union(set(), *(_json_keys(v, prefix) for v in obj))
    return set()


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "figures").glob("*summary*.json")))
def test_committed_figure_summaries_have_documented_keys(name):
    """Each summary kept in figures/ has its section, which points to the command's section, and
    every key of the file (per-state keys of a workload probe sit under ``results``) is there."""
    import json

    sections = _sections((ROOT / "docs" / "outputs.md").read_text())
    heading = f"figures {name}"
    assert heading in sections, f"docs/outputs.md has no section '## {heading}'"
    rows = [line for line in (ROOT / "docs" / "outputs.md").read_text().split(f"## {heading}\n")[1].split("\n## ")[0]
            .splitlines() if line.startswith("| (all keys)")]  # fmt: skip
    target = re.search(r"as in `([^`]+)`", rows[0]).group(1)
    names = set(sections[target])
    for key in sorted(_json_keys(json.loads((ROOT / "figures" / name).read_text()))):
        parts = key.split(".")
        candidates = [".".join(parts[:k]) for k in range(1, len(parts) + 1)]
        if parts[0] == "results" and len(parts) > 1:  # probe: the per-state keys of a workload
            candidates.append(parts[1])
        assert any(c in names for c in candidates), f"{name}: {key} is not in '## {target}'"
