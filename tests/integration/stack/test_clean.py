"""`make clean` removes `make up`'s database wherever it really lives: a cluster the postgres
user could not keep in the checkout (it refuses to run as root, and cannot enter a folder
closed to others) is in the temp dir, and must not be left there."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from groundswell_stack.postgres import LocalPostgres
from groundswell_stack.processes import free_port
from groundswell_stack.state import database_dir

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root's clusters move out of the checkout")
def test_make_clean_removes_a_cluster_that_moved_to_the_temp_dir(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    checkout.chmod(0o700)  # like a checkout under /root
    run_dir = checkout / ".run"
    run_dir.mkdir()
    postgres = LocalPostgres(run_dir / "postgres", free_port())
    assert postgres.root == database_dir(run_dir)  # where `make up` says it is
    assert not postgres.root.is_relative_to(checkout)
    postgres.start()
    try:
        assert (postgres.data / "PG_VERSION").read_text().strip() == "15"
    finally:
        postgres.stop()

    # The real target, pointed at this run dir (and at a venv that is not there).
    done = subprocess.run(
        ["make", "-C", str(ROOT), "clean", f"RUN_DIR={run_dir}", f"VENV={tmp_path / 'no-venv'}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"removed {postgres.root}" in done.stdout
    assert not postgres.root.exists()
    assert not run_dir.exists()
