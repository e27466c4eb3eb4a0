"""`make up`'s kept state: the admin token survives restarts (and stays private), and
`make clean`'s removal reaches the database wherever it went."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from groundswell_stack.state import (
    ADMIN_TOKEN_FILE,
    admin_token,
    cluster_root,
    moved_root,
    remove_state,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_token_is_made_once_and_kept_private_across_restarts(tmp_path: Path) -> None:
    run_dir = tmp_path / ".run"
    first, origin = admin_token(run_dir, {})
    assert len(first) >= 32  # signing refuses a shorter one
    assert origin.startswith("new")
    assert mode(run_dir / ADMIN_TOKEN_FILE) == 0o600
    again, origin = admin_token(run_dir, {})  # the next `make up`
    assert again == first
    assert origin.startswith("kept in")
    assert [p.name for p in run_dir.iterdir()] == [ADMIN_TOKEN_FILE]  # no partial file left


def test_the_environment_wins_and_leaves_the_kept_token_alone(tmp_path: Path) -> None:
    kept, _ = admin_token(tmp_path, {})
    chosen = "chosen-by-the-operator-0123456789abcdef"
    assert admin_token(tmp_path, {"ADMIN_TOKEN": chosen}) == (chosen, "from ADMIN_TOKEN")
    assert admin_token(tmp_path, {})[0] == kept


def test_a_loose_token_file_is_tightened_and_an_empty_one_replaced(tmp_path: Path) -> None:
    path = tmp_path / ADMIN_TOKEN_FILE
    path.write_text("restored-from-a-backup-0123456789abcdef\n")
    path.chmod(0o644)
    assert admin_token(tmp_path, {})[0] == "restored-from-a-backup-0123456789abcdef"
    assert mode(path) == 0o600
    path.write_text("")
    token, origin = admin_token(tmp_path, {})
    assert token and origin.startswith("new")
    assert path.read_text().strip() == token


def test_clean_removes_the_run_dir_and_the_moved_cluster(tmp_path: Path) -> None:
    run_dir = tmp_path / ".run"
    (run_dir / "logs").mkdir(parents=True)
    moved = moved_root(run_dir / "postgres")
    (moved / "data").mkdir(parents=True)
    (moved / "data" / "PG_VERSION").write_text("15\n")
    assert moved != run_dir / "postgres" and not moved.is_relative_to(run_dir)
    assert set(remove_state(run_dir)) == {run_dir, moved}
    assert not run_dir.exists() and not moved.exists()
    assert remove_state(run_dir) == []  # twice is fine


def test_the_cluster_moves_only_when_the_postgres_user_cannot_reach_it(tmp_path: Path) -> None:
    # Root's clusters run as the postgres user, which must be able to walk down to them.
    open_dir = Path(tempfile.mkdtemp(prefix="groundswell-open-"))
    try:
        open_dir.chmod(0o755)
        reachable = open_dir / ".run" / "postgres"
        assert cluster_root(reachable) == reachable
        closed = tmp_path / "checkout"
        closed.mkdir()
        closed.chmod(0o700)
        wanted = closed / ".run" / "postgres"
        assert cluster_root(wanted) == (moved_root(wanted) if os.geteuid() == 0 else wanted)
    finally:
        shutil.rmtree(open_dir)
    assert moved_root(wanted) == moved_root(wanted)  # the same place at every start
    assert moved_root(wanted) != moved_root(reachable)
