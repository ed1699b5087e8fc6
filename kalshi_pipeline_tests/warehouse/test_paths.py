"""Database paths that cannot work are refused at start, by the real command, with the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from kalshi_pipeline.stream.config import StreamConfig
from kalshi_pipeline.warehouse.paths import (
    DatabasePathError,
    adopt_legacy_landing,
    check_database_path,
    landing_folder,
    prepare_database_folder,
)

pytestmark = pytest.mark.timeout(120)
NOBODY = 65534


def _stream(database: str, cwd: Path, env_path: str | None = None, **popen: object):
    env = dict(os.environ, KALSHI_HOME=str(cwd / ".kalshi"))
    env.pop("KALSHI_DUCKDB_PATH", None)
    args = [sys.executable, "-m", "kalshi_pipeline.cli", "stream", "--seconds", "1", "--quiet"]
    if env_path is not None:
        env["KALSHI_DUCKDB_PATH"] = env_path
    else:
        args += ["--database", database]
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, **popen
    )


def test_a_folder_as_database_is_refused_and_nothing_lands_at_the_root(tmp_path):
    folder = tmp_path / "somewhere"
    folder.mkdir()
    done = _stream(str(folder), tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"the database path {folder} is a folder" in done.stderr
    assert str(folder / "kalshi.duckdb") in done.stderr  # the fix: a file inside it
    assert list(folder.iterdir()) == []  # nothing was created, no landing log anywhere
    assert not (folder.parent / "landing").exists()
    assert "Traceback" not in done.stderr


def test_the_environment_variable_is_checked_the_same_way(tmp_path):
    done = _stream("", tmp_path, env_path=str(tmp_path))
    assert done.returncode == 2
    assert "is a folder" in done.stderr and "KALSHI_DUCKDB_PATH" in done.stderr


@pytest.mark.parametrize("where", ["/proc/nope.duckdb", "/sys/kernel/nope.duckdb"])
def test_a_pseudo_filesystem_is_refused_as_such_not_as_a_full_disk(tmp_path, where):
    done = _stream(where, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "pseudo-filesystem" in done.stderr, done.stderr
    assert "MiB free" not in done.stderr


def test_a_path_through_a_file_is_refused_naming_the_file(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    with pytest.raises(DatabasePathError, match=f"runs through {blocker}, which is a file"):
        check_database_path(blocker / "sub" / "k.duckdb")


def _check_as(uid: int, database: Path) -> str:
    """check_database_path in a forked child running as `uid`: its error message, or "ok"."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the user, check, report, leave without cleanup
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            check_database_path(database)
            message = "ok"
        except DatabasePathError as exc:
            message = str(exc)
        except BaseException as exc:
            message = f"unexpected {type(exc).__name__}: {exc}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message


def test_an_unreachable_or_unwritable_place_is_refused_naming_the_user_and_the_fix(tmp_path):
    if os.getuid() != 0:  # an ordinary user: a folder of ours without write permission
        tmp_path.chmod(0o555)
        try:
            with pytest.raises(DatabasePathError, match="cannot write in"):
                check_database_path(tmp_path / "k.duckdb")
        finally:
            tmp_path.chmod(0o755)
        return
    hidden = tmp_path / "k.duckdb"  # pytest's tmp folders are 0700: nobody cannot enter
    message = _check_as(NOBODY, hidden)
    assert f"(uid {NOBODY}) cannot reach the database path {hidden}" in message, message
    open_folder = Path(tempfile.mkdtemp(prefix="kalshi-paths-"))
    try:
        _unwritable_cases(open_folder)
    finally:
        shutil.rmtree(open_folder)


def _unwritable_cases(open_folder: Path) -> None:
    open_folder.chmod(0o755)
    locked = open_folder / "locked"
    locked.mkdir(mode=0o755)  # root's, not writable by others
    message = _check_as(NOBODY, locked / "k.duckdb")
    assert f"(uid {NOBODY}) cannot write in {locked}" in message, message
    assert "fix the folder's permissions" in message
    db = locked / "k.duckdb"
    db.write_bytes(b"")
    db.chmod(0o644)
    message = _check_as(NOBODY, db)
    assert "exists but this user" in message and "chmod u+rw" in message, message
    assert _check_as(0, db) == "ok"


def test_the_landing_log_is_named_after_the_database_beside_it():
    assert landing_folder(Path("data/kalshi.duckdb")) == Path("data/kalshi.landing")
    assert landing_folder(Path("/srv/k/feed.db")) == Path("/srv/k/feed.landing")
    assert StreamConfig(database=Path("/tmp/x/k.duckdb")).landing == Path("/tmp/x/k.landing")


def test_a_missing_parent_folder_is_created_and_said(tmp_path):
    db = tmp_path / "new" / "deeper" / "k.duckdb"
    assert StreamConfig.from_env(database=db).database == db  # accepted: it can be created
    note = prepare_database_folder(db)
    assert note == f"created the folder {db.parent} for the database k.duckdb"
    assert db.parent.is_dir()
    assert prepare_database_folder(db) is None  # said once


def test_an_earlier_versions_landing_folder_is_moved_not_lost(tmp_path):
    db = tmp_path / "data" / "kalshi.duckdb"
    legacy = tmp_path / "data" / "landing"
    legacy.mkdir(parents=True)
    (legacy / "1700000000000-1-0.seg").write_bytes(b"closed segment")
    (legacy / "1700000000001-999999999-0.open").write_bytes(b"crashed writer's segment")
    moved = adopt_legacy_landing(db)
    assert moved is not None and moved.moved == 2 and moved.left == 0
    assert str(legacy) in moved.message and str(landing_folder(db)) in moved.message
    assert sorted(p.name for p in landing_folder(db).iterdir()) == [
        "1700000000000-1-0.seg",
        "1700000000001-999999999-0.open",
    ]
    assert (landing_folder(db) / "1700000000000-1-0.seg").read_bytes() == b"closed segment"
    assert not legacy.exists()
    assert adopt_legacy_landing(db) is None


def test_a_segment_still_written_by_a_live_process_stays(tmp_path):
    db = tmp_path / "kalshi.duckdb"
    legacy = tmp_path / "landing"
    legacy.mkdir()
    live = legacy / f"1700000000000-{os.getpid()}-0.open"
    live.write_bytes(b"x")
    moved = adopt_legacy_landing(db)
    assert moved is not None and moved.left == 1 and live.exists()
    assert "still being written" in moved.message


def test_make_run_refuses_a_database_path_that_cannot_work_before_starting_anything(tmp_path):
    env = dict(
        os.environ,
        DAGSTER_HOME=str(tmp_path / "dagster-home"),
        KALSHI_DUCKDB_PATH="/proc/nope.duckdb",
        KALSHI_HOME=str(tmp_path / ".kalshi"),
    )
    done = subprocess.run(
        [sys.executable, "-m", "kalshi_pipeline.cli", "dev", "--port", "0", "--sim-port", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "ERROR: the database path /proc/nope.duckdb is on a proc pseudo-filesystem" in (
        done.stderr
    )
    assert "no process left behind" in done.stderr
