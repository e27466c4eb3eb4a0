"""What ships is what the tests ran: the wheels hold every file the services read at run time.

The suite itself runs on editable installs, which read files from the checkout; a wheel
that forgot its templates would pass every other test and fail in its image. So each
package is built as a wheel, its contents are checked, and the apps are built from the
installed wheels alone (PYTHONPATH puts them before the editable checkout).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "packages/contracts": "groundswell_contracts",
    "packages/runtime": "groundswell_runtime",
    "services/signing": "groundswell_signing",
    "services/counter": "groundswell_counter",
    "services/mailer": "groundswell_mailer",
    "services/sharing": "groundswell_sharing",
}


def data_files(package_dir: Path, module: str) -> set[str]:
    """Every non-Python file the package reads at run time, as wheel paths."""
    source = package_dir / module
    return {
        f"{module}/{path.relative_to(source).as_posix()}"
        for path in source.rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    # Built from clean copies: setuptools keeps a build/ folder in the source tree, and a
    # stale one could put files in a wheel that the source no longer has.
    sources = tmp_path_factory.mktemp("sources")
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package,
            sources / package,
            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
        )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(out),
            *(str(sources / p) for p in PACKAGES),
        ],
        check=True,
    )
    return out


def test_each_wheel_holds_its_templates_static_files_and_migrations(wheels: Path) -> None:
    for package, module in PACKAGES.items():
        [wheel] = wheels.glob(f"{module}-*.whl")
        names = set(zipfile.ZipFile(wheel).namelist())
        missing = data_files(ROOT / package, module) - names
        assert not missing, f"{wheel.name} lacks {sorted(missing)}"


def test_the_apps_build_from_the_installed_wheels(wheels: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            *map(str, wheels.glob("*.whl")),
        ],
        check=True,
    )
    probe = (
        "import groundswell_signing, groundswell_signing.entrypoints.http.app as a\n"
        "from groundswell_signing.config import SigningSettings\n"
        f"assert groundswell_signing.__file__.startswith({str(target)!r})\n"
        "a.create_app(SigningSettings(ADMIN_TOKEN='x' * 40))\n"
        "from groundswell_signing.migrations import MIGRATIONS\n"
        "assert len(MIGRATIONS) > 1\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
