"""The wheel holds every package of the source tree, mapped into ``tiltstream.*``.

The component folders (acquire, stream, recon, viz, sim) sit at the repository root and are mapped
into the one package with setuptools ``package-dir``; a sub-package missing from pyproject's
package list would be left out of a non-editable install (``pip install .``) while an editable one
still finds it. This test builds the wheel from a copy of the sources (about 2 s, no network) and
compares its packages with the folders on disk.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: source folder -> package it is installed as
FOLDERS = {"tiltstream": "tiltstream", "acquire": "tiltstream/acquire", "stream": "tiltstream/stream",
           "recon": "tiltstream/recon", "viz": "tiltstream/viz", "sim": "tiltstream/sim"}


def source_packages(root: Path) -> set[str]:
    """Every folder with an ``__init__.py`` under the mapped source folders, as installed paths."""
    found = set()
    for folder, package in FOLDERS.items():
        for init in (root / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(root / folder).as_posix()
            found.add(package if rel == "." else f"{package}/{rel}")
    return found


def wheel_packages(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return {name.rsplit("/", 1)[0] for name in zf.namelist() if name.endswith("/__init__.py")}


def build_wheel(root: Path, work: Path) -> Path:
    """Build the wheel of ``root`` from a copy of its sources in ``work`` (the checkout stays clean)."""
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(root / name, src / name)
    for folder in FOLDERS:
        shutil.copytree(root / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = work / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
           "-w", str(out), str(src)]
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, f"pip wheel failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    wheels = sorted(out.glob("tiltstream-*.whl"))
    assert len(wheels) == 1, f"expected 1 wheel in {out}, got {[w.name for w in wheels]}"
    return wheels[0]


def test_source_packages_sees_subpackages():
    packages = source_packages(ROOT)
    assert {"tiltstream", "tiltstream/recon", "tiltstream/recon/align", "tiltstream/recon/dip"} <= packages
    assert not any(p.startswith(("acquire", "stream", "recon", "viz", "sim")) for p in packages)


def test_wheel_holds_every_source_package(tmp_path):
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools (in the [test] extra)")
    wheel = build_wheel(ROOT, tmp_path)
    in_wheel = wheel_packages(wheel)
    on_disk = source_packages(ROOT)
    missing = sorted(on_disk - in_wheel)
    assert not missing, f"{wheel.name}: expected every package of the source tree, missing {missing}"
    stray = sorted(p for p in in_wheel - on_disk)
    assert not stray, f"{wheel.name}: expected only packages under tiltstream/, got also {stray}"


def test_wheel_holds_the_napari_manifest_and_its_entry_point(tmp_path):
    """viz/napari.yaml is package data: without it napari cannot load the plugin from a wheel."""
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools (in the [test] extra)")
    wheel = build_wheel(ROOT, tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "tiltstream/viz/napari.yaml" in names, f"{wheel.name}: expected tiltstream/viz/napari.yaml"
        manifest = zf.read("tiltstream/viz/napari.yaml").decode()
        entry_points = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "[napari.manifest]" in entry_points and "tiltstream = tiltstream.viz:napari.yaml" in entry_points
    assert "python_name: tiltstream.viz.napari_plugin:get_reader" in manifest
