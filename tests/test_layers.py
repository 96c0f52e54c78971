"""The layering of the design (``[tool.importlinter]`` in pyproject.toml), checked with ``lint-imports``.

The check runs on a copy of the imported package (installed wheel or source checkout alike): the
checkout maps five top-level folders into ``tiltstream.*``, which import-linter cannot see through an
editable install, and a copy can also be broken on purpose to show that the check can fail.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
COMPONENTS = ("acquire", "stream", "recon", "viz", "sim")


def _lint_imports() -> str:
    exe = shutil.which("lint-imports", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if exe is None:
        pytest.fail("lint-imports: expected it installed with the [test] extra (import-linter), found none")
    return exe


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A folder holding a copy of the imported ``tiltstream`` package as one tree."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    root = Path(importlib.import_module("tiltstream").__file__).parent
    dst = tmp_path / "pkg" / "tiltstream"
    dst.mkdir(parents=True)
    for f in root.glob("*.py"):
        shutil.copy(f, dst / f.name)
    for name in COMPONENTS:
        shutil.copytree(Path(importlib.import_module(f"tiltstream.{name}").__file__).parent, dst / name,
                        ignore=ignore)
    return tmp_path / "pkg"


def lint(package_root: Path, *contracts: str) -> subprocess.CompletedProcess:
    """``lint-imports`` over the package in ``package_root`` (only the contracts with these ids, if any)."""
    env = dict(os.environ, PYTHONPATH=str(package_root), COLUMNS="250")
    only = [arg for c in contracts for arg in ("--contract", c)]
    return subprocess.run([_lint_imports(), "--config", str(PYPROJECT), "--no-cache", "--no-logo", *only],
                          cwd=package_root, env=env, capture_output=True, text=True, timeout=240)


def test_the_package_keeps_the_layering(package_copy):
    result = lint(package_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout, result.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("sim/noise.py", "import tiltstream.stream.messages", "layers"),  # sim imports nothing of the project
    ("stream/protocol.py", "import tiltstream.recon.geometry", "layers"),  # stream imports no component
    ("recon/fbp.py", "import tiltstream.demo", "layers"),  # no component imports the CLI
    ("viz/slicing.py", "import tiltstream.recon.geometry", "viz-no-recon"),
    ("acquire/memory.py", "import tiltstream.recon", "acquire-sources-only"),
])
def test_a_forbidden_import_breaks_its_contract(package_copy, module, line, contract):
    path = package_copy / "tiltstream" / module
    path.write_text(path.read_text() + f"\n{line}  # deliberately forbidden\n")
    result = lint(package_copy, contract)
    assert result.returncode != 0 and "0 kept, 1 broken" in result.stdout, result.stdout
    assert f"tiltstream.{module[:-3].replace('/', '.')} -> {line.split()[-1]}" in result.stdout, result.stdout
