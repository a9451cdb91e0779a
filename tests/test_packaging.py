"""The wheel a user installs carries everything the ledger needs, migrations included."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _listed_packages() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(config["tool"]["setuptools"]["packages"])


def test_every_package_directory_is_listed() -> None:
    """pyproject.toml lists the packages (so that migrations/ can ship as ibkr_tasks._migrations):
    a new subpackage that is not listed would be missing from the wheel."""
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("ibkr_tasks", "flows")
        for init in (ROOT / top).rglob("__init__.py")
    }
    listed = _listed_packages()
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert {"ibkr_tasks._migrations", "ibkr_tasks._migrations.versions", "ibkr_tasks.data"} <= listed


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy: an in-tree build leaves build/lib behind, whose stale files a later build
    # would package again.
    source = out / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".prefect-home", "*.db", "tests"
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-build-isolation",
            "--no-deps",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
        cwd=out,
    )
    (built,) = out.glob("ibkr_tasks-*.whl")
    return built


def test_wheel_carries_migrations_and_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    versions = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("*.py"))
    assert versions
    for name in ("env.py", "script.py.mako", *(f"versions/{v}" for v in versions)):
        assert f"ibkr_tasks/_migrations/{name}" in names
    assert "ibkr_tasks/data/prompt_policy.json" in names
    assert "flows/nightly_reconciliation.py" in names


def test_installed_wheel_upgrades_a_ledger(wheel: Path, tmp_path: Path) -> None:
    """Installed from the wheel alone (no checkout on the path), ``ibkr-tasks db upgrade`` works."""
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    db = tmp_path / "ledger.db"
    script = (
        "import ibkr_tasks, sys\n"
        "from ibkr_tasks.cli import main\n"
        "print(ibkr_tasks.__file__)\n"
        f"sys.exit(main(['db', 'upgrade', 'sqlite:///{db}']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0].startswith(str(site))  # the wheel's copy, not the checkout's
    import sqlite3

    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
    assert {"fills", "commissions", "alembic_version"} <= tables
