"""Install without the Makefile: build the wheel, pip-install it into a fresh virtualenv,
import it and run the console script there.

Offline and quick: the wheel is built with the setuptools already installed
(``--no-build-isolation``) and installed with ``--no-deps --no-index``; the fresh venv
reaches numpy, torch and the other dependencies through a ``.pth`` line naming the test
interpreter's site-packages, after its own (so the installed wheel, not this checkout,
is what imports).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import autorec

ROOT = Path(__file__).resolve().parents[1]


def _run(args, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300,
                          env=env, **kw)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel of this checkout, built from a copy (the checkout stays clean)."""
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("build")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "autorec", src / "autorec", ignore=shutil.ignore_patterns("__pycache__"))
    proc = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "--no-index", "-w", tmp / "dist", src])
    log = proc.stdout + proc.stderr
    assert "Deprecat" not in log and "TOML table" not in log, log  # the SPDX string, no warning
    (path,) = (tmp / "dist").glob("autorec-*.whl")
    return path


def test_the_wheel_holds_the_package_its_licence_and_typing_marker(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "autorec/py.typed" in names and "autorec/tuning.py" in names and "autorec/cli/__init__.py" in names
    assert not any(n.startswith(("tests/", "benchmarks/", "datasets/")) for n in names)
    (license_file,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert "MIT License" in zipfile.ZipFile(wheel).read(license_file).decode()
    (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "License-Expression: MIT" in text and "Requires-Python: >=3.11" in text
    assert f"Version: {autorec.__version__}" in text
    assert "Provides-Extra: parquet" in text and "Provides-Extra: plots" in text


def test_pip_install_into_a_fresh_venv_and_run_it(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # numpy, torch ...
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel])
    work = tmp_path / "elsewhere"  # not the checkout: its autorec/ must not be importable
    work.mkdir()
    code = ("import autorec, importlib.metadata as m; print(autorec.__file__); "
            "print(m.version('autorec')); R = autorec.datasets.synthetic_ratings(seed=0); "
            "print(autorec.EASE().fit(R).recommend_for(R.users[:1], R, k=3).shape)")
    out = _run([python, "-c", code], cwd=work).stdout.split()
    assert out[0].startswith(str(site)) and out[1] == autorec.__version__ and out[2] == "(3,"
    version = _run([venv / "bin" / "autorec", "--version"], cwd=work).stdout.strip()
    assert version == f"autorec {autorec.__version__}"
    listing = _run([venv / "bin" / "autorec", "datasets", "list"], cwd=work).stdout
    assert "ml-100k" in listing
