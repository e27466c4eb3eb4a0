"""What ships is what the tests ran: the wheels hold every file the services read at run time.

The suite itself runs on editable installs, which read files from the checkout; a wheel
that forgot its templates would pass every other test and fail in its image. So each
package is built as a wheel, its contents are checked, and the apps are built from the
installed wheels alone (PYTHONPATH puts them before the editable checkout).

The packages built here are the ones deploy/docker/Dockerfile builds: the list is read from
its `pip wheel --no-deps` command, with the same command, and checked to name every package
each image installs, down to the Groundswell packages those depend on. A package added to a
service's dependencies but not to the Dockerfile fails here, not in a container.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy/docker/Dockerfile"
# The images' Python packages are ours when their distribution name starts with this.
OURS = "groundswell-"


def dockerfile_runs() -> list[tuple[str, list[str]]]:
    """Each RUN of the Dockerfile as (stage name, shell words)."""
    runs: list[tuple[str, list[str]]] = []
    stage = ""
    for instruction in DockerfileParser(str(DOCKERFILE), cache_content=True).structure:
        if instruction["instruction"] not in ("FROM", "RUN"):
            continue
        words = shlex.split(instruction["value"])
        if instruction["instruction"] == "FROM":
            stage = words[2] if len(words) >= 3 and words[1].upper() == "AS" else ""
        elif instruction["instruction"] == "RUN":
            runs.append((stage, words))
    return runs


def pip_arguments(words: list[str], command: str) -> list[str]:
    """The positional arguments of the `pip <command>` in a RUN, up to its first `&&`."""
    start = next(i for i in range(len(words) - 1) if words[i : i + 2] == ["pip", command])
    args: list[str] = []
    rest = iter(words[start + 2 :])
    for word in rest:
        if word == "&&":
            break
        if word in ("--wheel-dir", "--find-links", "--constraint", "-c", "-w"):
            next(rest)  # the option's value
        elif not word.startswith("-"):
            args.append(word)
    return args


def built_packages() -> list[str]:
    """The source folders the Dockerfile's `pip wheel --no-deps` builds, in its order."""
    [words] = [w for _, w in dockerfile_runs() if "--no-deps" in w and "wheel" in w]
    return [arg.removeprefix("./") for arg in pip_arguments(words, "wheel")]


def distribution(package: str) -> str:
    name: str = tomllib.loads((ROOT / package / "pyproject.toml").read_text())["project"]["name"]
    return name


def our_dependencies(package: str) -> set[str]:
    project = tomllib.loads((ROOT / package / "pyproject.toml").read_text())["project"]
    names = (re.match(r"[A-Za-z0-9._-]+", dep) for dep in project.get("dependencies", []))
    return {m.group(0).lower() for m in names if m and m.group(0).lower().startswith(OURS)}


# Source folder -> importable module, for every package the Dockerfile builds.
PACKAGES = {package: distribution(package).replace("-", "_") for package in built_packages()}


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


def test_the_dockerfile_builds_every_package_the_images_install() -> None:
    by_name = {distribution(p): p for p in PACKAGES}

    def closure(name: str) -> set[str]:
        assert name in by_name, f"{DOCKERFILE.name} does not build {name}"
        found = {name}
        for dependency in our_dependencies(by_name[name]):
            found |= closure(dependency)
        return found

    runs = dockerfile_runs()
    # The base stage's third-party wheels come from the services' wheels named in this run.
    [base_run] = [w for _, w in runs if "/wheels/base" in w and "wheel" in w]
    in_base = {
        m.group(1).replace("_", "-")
        for arg in pip_arguments(base_run, "wheel")
        if (m := re.search(r"/(groundswell_[a-z]+)-\*\.whl$", arg))
    }
    installs = {
        stage: [a for a in pip_arguments(words, "install") if a.startswith(OURS)]
        for stage, words in runs
        if "install" in words and any(a.startswith(OURS) for a in words)
    }
    services = {p.parent.name for p in (ROOT / "services").glob("*/pyproject.toml")}
    assert services <= set(installs), "a service without an image stage"
    for stage, names in installs.items():
        needed = set().union(*(closure(name) for name in names))
        if stage in services:
            # Only /wheels/app and the base layer: the base must hold their dependencies.
            assert needed <= in_base, (stage, sorted(needed - in_base))
    # Every package a test here checks is one an image installs, and the reverse.
    installed = set().union(*(closure(n) for names in installs.values() for n in names))
    assert installed == set(by_name), sorted(installed ^ set(by_name))
