"""Where the database and its landing log live, and whether a database path can work at all.

The landing log is a folder beside the database, named after it: `data/kalshi.landing/` for
`data/kalshi.duckdb`. A path that cannot hold a database (a folder, a pseudo-filesystem such as
/proc or /sys, a place this user cannot write) is refused when the config is built, naming the
reason and the fix, before anything is received. A missing parent folder is created when the
stream starts, and the stream says so. An earlier version kept the landing log in `landing/`
beside the database; its segments are moved into the new folder on start, never dropped.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import psutil

from kalshi_pipeline.warehouse.connection import WarehouseError

LEGACY_LANDING_NAME = "landing"
SEGMENT_SUFFIXES = (".seg", ".open")
# Filesystems that hold no files of ours: the kernel's views and in-memory control files.
PSEUDO_FILESYSTEMS = frozenset(
    {
        "proc",
        "sysfs",
        "devtmpfs",
        "devpts",
        "cgroup",
        "cgroup2",
        "debugfs",
        "tracefs",
        "securityfs",
        "pstore",
        "bpf",
        "configfs",
        "fusectl",
        "mqueue",
        "binfmt_misc",
        "efivarfs",
        "autofs",
    }
)
_PSEUDO_ROOTS = ("/proc", "/sys", "/dev")  # when the mount table cannot be read
_FIX = "choose another path with --database or KALSHI_DUCKDB_PATH, e.g. data/kalshi.duckdb"


class DatabasePathError(WarehouseError):
    """The database path cannot hold a database; the message says why and what to do."""


def landing_folder(database: Path) -> Path:
    """The landing log's folder: beside the database, named after it."""
    return database.with_name(database.stem + ".landing")


def legacy_landing_folder(database: Path) -> Path:
    """Where versions before this one kept the landing log: `landing/` beside the database."""
    return database.parent / LEGACY_LANDING_NAME


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _mount_of(path: Path) -> tuple[str, str] | None:
    """(mount point, filesystem type) holding `path`, from the mount table; None if unreadable."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    best: tuple[str, str] | None = None
    target = str(path)
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) > len(best[0])):
            best = (point, parts[2])
    return best


def check_database_path(database: Path) -> Path:
    """Refuse, with the reason and the fix, a database path that cannot work; return it.

    Checks only what can be known before starting: the path is not a folder, it is not on a
    pseudo-filesystem, and the nearest existing folder on the way to it is writable.
    """
    database = Path(os.path.expanduser(database))
    try:
        return _check(database)
    except PermissionError as exc:
        raise DatabasePathError(
            f"this user (uid {os.getuid()}) cannot reach the database path {database}: "
            f"{exc.strerror} on {exc.filename}; fix the permissions of the folders on the way "
            f"or {_FIX}"
        ) from None


def _check(database: Path) -> Path:
    if str(database) in ("", "."):
        raise DatabasePathError(f"the database path is empty: {_FIX}")
    if database.is_dir():
        raise DatabasePathError(
            f"the database path {database} is a folder, not a file: name a file inside it, "
            f"e.g. {database / 'kalshi.duckdb'}, with --database or KALSHI_DUCKDB_PATH"
        )
    absolute = Path(os.path.abspath(database))
    existing = _nearest_existing(absolute)
    resolved = existing.resolve()
    mount = _mount_of(resolved)
    if mount is not None and mount[1] in PSEUDO_FILESYSTEMS:
        raise DatabasePathError(
            f"the database path {database} is on a {mount[1]} pseudo-filesystem (mounted at "
            f"{mount[0]}), which holds no ordinary files: {_FIX}"
        )
    if mount is None and any(
        str(resolved) == root or str(resolved).startswith(root + "/") for root in _PSEUDO_ROOTS
    ):
        raise DatabasePathError(
            f"the database path {database} is under {resolved}, a pseudo-filesystem that holds "
            f"no ordinary files: {_FIX}"
        )
    if existing != absolute and not existing.is_dir():
        raise DatabasePathError(
            f"the database path {database} runs through {existing}, which is a file, not a "
            f"folder: {_FIX}"
        )
    if existing == absolute:
        if not os.access(absolute, os.R_OK | os.W_OK):
            raise DatabasePathError(
                f"the database {database} exists but this user (uid {os.getuid()}) cannot read "
                f"and write it: fix its permissions (chmod u+rw) or {_FIX}"
            )
        existing = absolute.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DatabasePathError(
            f"this user (uid {os.getuid()}) cannot write in {existing}, so the database "
            f"{database} cannot be created there: fix the folder's permissions or {_FIX}"
        )
    return database


def prepare_database_folder(database: Path) -> str | None:
    """Create the database's missing parent folder; say so (None when it existed)."""
    folder = database.parent
    if folder.is_dir():
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabasePathError(
            f"cannot create the folder {folder} for the database {database}: {exc.strerror}; {_FIX}"
        ) from None
    return f"created the folder {folder} for the database {database.name}"


@dataclass(frozen=True)
class LegacyLanding:
    """What adopting an earlier version's landing folder did."""

    moved: int
    left: int
    message: str


def _written_by_live_process(segment: Path) -> bool:
    if segment.suffix != ".open":
        return False
    try:
        pid = int(segment.stem.split("-")[1])
    except (IndexError, ValueError):
        return False
    return pid == os.getpid() or psutil.pid_exists(pid)


def adopt_legacy_landing(database: Path) -> LegacyLanding | None:
    """Move the segments of an earlier version's `landing/` folder into the database's landing
    folder, so the writer loads what they hold; segment names are unique, and the writer's
    positions are keyed by name, so nothing is loaded twice. Segments still being written by a
    live process are left where they are. None when there was nothing to move."""
    legacy = legacy_landing_folder(database)
    target = landing_folder(database)
    if not legacy.is_dir() or legacy.resolve() == target.resolve():
        return None
    segments = sorted(p for p in legacy.iterdir() if p.suffix in SEGMENT_SUFFIXES)
    if not segments:
        return None
    target.mkdir(parents=True, exist_ok=True)
    moved = left = 0
    for seg in segments:
        if _written_by_live_process(seg) or (target / seg.name).exists():
            left += 1
            continue
        os.replace(seg, target / seg.name)
        moved += 1
    if left == 0:
        with contextlib.suppress(OSError):  # other files of the user's own: leave the folder
            legacy.rmdir()
    message = (
        f"moved {moved} landing segment(s) of an earlier version from {legacy} to {target}; "
        "they are loaded from there"
    )
    if left:
        message += f"; {left} still being written by another process stay in {legacy}"
    return LegacyLanding(moved, left, message)
