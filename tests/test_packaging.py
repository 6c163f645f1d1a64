"""`pip install .` into a fresh virtualenv: everything lives inside the clipstore namespace."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent


@pytest.mark.slow
def test_pip_install_puts_only_clipstore_in_site_packages(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(
        REPO, source, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "*.clipstore")
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("clipstore-*.whl")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], check=True, capture_output=True)

    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    installed = {entry.name for entry in site.iterdir()}
    assert "clipstore" in installed
    assert not installed & {"cli", "migrations", "cli.py", "migrations.py", "tests", "examples"}
    assert (site / "clipstore" / "cli" / "__init__.py").is_file()
    assert (site / "clipstore" / "migrations" / "0001_create_tables.py").is_file()
    assert (site / "clipstore" / "model_configs" / "clipstore-mini.json").is_file()
    serve = site / "clipstore" / "serve"  # the web page works offline: its templates and htmx ship in the wheel
    assert {"page.html", "results.html", "detail.html", "describe.html"} <= {path.name for path in (serve / "templates").iterdir()}
    assert {"htmx.min.js", "htmx.LICENSE.txt", "app.js", "style.css"} <= {path.name for path in (serve / "static").iterdir()}

    # The migrations package imports without the heavy dependencies; no top-level cli/migrations exist.
    probe = "import importlib.util, clipstore.migrations; print(importlib.util.find_spec('cli'), importlib.util.find_spec('migrations'))"
    out = subprocess.run([str(python), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert out.strip() == "None None"
    scripts = env_dir / ("Scripts" if sys.platform == "win32" else "bin")
    assert any(path.name.startswith("clipstore") for path in scripts.iterdir())
