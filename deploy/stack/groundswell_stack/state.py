"""What `make up` keeps between starts, and where its database really lives.

- The admin token: generated once into `<run dir>/admin-token` (mode 0600) and reused at
  every start, so the token a campaign wrote down keeps working; `ADMIN_TOKEN` from the
  environment still wins.
- The PostgreSQL cluster: `<run dir>/postgres`, unless the postgres user cannot walk down to
  it (a checkout under /root, say). initdb and postgres refuse to run as root, so the cluster
  then lives in a folder of its own under the system temp dir, named after the run dir so
  that every start (and `make clean`) finds the same one.

Standard library only: `make clean` runs `python3 -m groundswell_stack.state clean .run`
with the system Python, whether or not the venv is still there.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 (a file name, not a secret)
MOVED_PREFIX = "groundswell-postgres-"


def admin_token(run_dir: Path, environ: Mapping[str, str]) -> tuple[str, str]:
    """The admin token for this run and where it came from (for the summary line)."""
    if environ.get("ADMIN_TOKEN"):
        return environ["ADMIN_TOKEN"], "from ADMIN_TOKEN"
    path = run_dir / ADMIN_TOKEN_FILE
    kept = _read_token(path)
    if kept:
        return kept, f"kept in {path}"
    run_dir.mkdir(parents=True, exist_ok=True)
    # 32 random bytes: 43 characters, above signing's 32-character minimum.
    token = secrets.token_urlsafe(32)
    # Written aside and renamed into place: a crash never leaves half a token. O_EXCL with
    # mode 0600: the file is never readable by others, not even for a moment.
    partial = path.with_name(f".{ADMIN_TOKEN_FILE}.{os.getpid()}")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    partial.replace(path)
    return token, f"new, kept in {path}"


def _read_token(path: Path) -> str | None:
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        return None
    # A copy restored with a looser mode is tightened: the token opens the admin API.
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o600)
    return token or None


def _postgres_can_reach(path: Path) -> bool:
    """Whether the postgres user can walk down to `path` (every parent searchable by others)."""
    if os.geteuid() != 0:
        return True
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents if parent.exists())


def moved_root(wanted: Path) -> Path:
    """Where the cluster for `wanted` lives when the postgres user cannot reach `wanted`."""
    digest = hashlib.sha1(str(wanted).encode(), usedforsecurity=False).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"{MOVED_PREFIX}{digest}"


def cluster_root(wanted: Path) -> Path:
    """`wanted`, or `moved_root(wanted)` when the postgres user cannot reach it."""
    return wanted if _postgres_can_reach(wanted) else moved_root(wanted)


def database_dir(run_dir: Path) -> Path:
    """The cluster `make up` uses for `run_dir` (its data is in `<this>/data`)."""
    return cluster_root(run_dir / "postgres")


def remove_state(run_dir: Path) -> list[Path]:
    """Remove `run_dir` and the cluster that belongs to it, wherever it is; returns what was
    removed. The moved location is removed even if the postgres user could reach the run dir
    by now (its permissions changed since), so nothing is ever left behind in the temp dir."""
    run_dir = run_dir.resolve()
    removed = []
    for path in (moved_root(run_dir / "postgres"), run_dir):
        if path.exists():
            shutil.rmtree(path)
            removed.append(path)
    return removed


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "clean":
        print("usage: python -m groundswell_stack.state clean RUN_DIR", file=sys.stderr)
        return 2
    for path in remove_state(Path(argv[1])):
        print(f"removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
