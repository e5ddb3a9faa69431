"""The wheel holds every subpackage: build it and import everything from it.

An editable install maps agentbench.envs to envs/ at run time, which hides a
package missing from the wheel; this test imports from the built wheel only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Top-level source folder -> the package it installs as (pyproject's package-dir).
SOURCE_ROOTS = {
    "agentbench": "agentbench",
    "envs": "agentbench.envs",
    "baselines": "agentbench.baselines",
}


def _source_packages() -> list[str]:
    names = []
    for folder, dotted in SOURCE_ROOTS.items():
        for init in sorted((REPO / folder).rglob("__init__.py")):
            parts = init.parent.relative_to(REPO / folder).parts
            names.append(".".join((dotted, *parts)))
    return names


def test_wheel_contains_and_imports_every_subpackage(tmp_path: Path) -> None:
    # Build from a clean copy: setuptools reuses an in-tree build/ folder, whose
    # stale files would mask a package missing from pyproject.toml.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in SOURCE_ROOTS:
        shutil.copytree(
            REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "-w", str(tmp_path / "dist"), str(source)],
        check=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("agentbench-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    packages = _source_packages()
    assert "agentbench.envs" in packages and "agentbench.baselines" in packages
    # PYTHONPATH comes before site-packages, and the editable finder only runs
    # after the path finder; so a module is found in the wheel, or in the repo
    # (a missing wheel entry), and __file__ tells which.
    script = (
        "import importlib, sys\n"
        f"site = {str(site)!r}\n"
        "for name in sys.argv[1:]:\n"
        "    module = importlib.import_module(name)\n"
        "    assert module.__file__.startswith(site), (name, module.__file__)\n"
        "import agentbench\n"
        "assert len(agentbench.envs.list_envs()) > 0\n"
        "from agentbench.suite import load_suite\n"
        "assert len(load_suite('full').env_ids) == 43  # suite TOMLs are package data\n"
        "from agentbench.reproduce import builtin_experiments, load_experiment\n"
        "assert len(builtin_experiments()) == 12  # and the published experiments\n"
        "load_experiment('knowing-doing')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *packages],
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    entry_points = next(site.glob("agentbench-*.dist-info")) / "entry_points.txt"
    assert "agentbench = agentbench.cli:main" in entry_points.read_text()
