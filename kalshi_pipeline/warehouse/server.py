"""The owner's Quack server: its port, its token file and the endpoint file clients read.

Beside `data/kalshi.duckdb` the owner keeps `kalshi.duckdb.token` (a random token, mode 0600:
it is a full key to the owner's SQL, including files its user can read) and
`kalshi.duckdb.endpoint` (JSON: port, pid, started_at). The server binds 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from kalshi_pipeline.warehouse.connection import WarehouseError, sibling
from kalshi_pipeline.warehouse.identity import engine_pid

if TYPE_CHECKING:
    import duckdb

PORT_SETTING = "KALSHI_WAREHOUSE_PORT"
# Clear of the simulator (8700) and Dagster's UI (3000).
DEFAULT_PORT = 8790


class WarehouseServerError(WarehouseError):
    """The owner cannot serve, or a client cannot be let in; the message names the fix."""


class Endpoint(msgspec.Struct, frozen=True):
    port: int
    pid: int
    started_at: str  # ISO 8601, UTC

    @property
    def uri(self) -> str:
        return f"quack:localhost:{self.port}"


def configured_port() -> int:
    raw = os.environ.get(PORT_SETTING, "").strip()
    if not raw:
        return DEFAULT_PORT
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise WarehouseServerError(
            f"{PORT_SETTING}={raw!r} is not a port; set it to a free TCP port between 1 and "
            f"65535 (default {DEFAULT_PORT})"
        )
    return port


def token_path(database: Path) -> Path:
    return sibling(database, ".token")


def endpoint_path(database: Path) -> Path:
    return sibling(database, ".endpoint")


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to a new 0600 file, then rename it over `path` (readers never see half)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def serve(con: duckdb.DuckDBPyConnection, database: Path, port: int) -> Endpoint:
    """Start serving `con`'s database on 127.0.0.1:`port` with a fresh token; write the token
    and endpoint files. The extensions must be loaded into `con` already."""
    import duckdb  # only the owner serves: the stream's receiving process never loads it

    taken = WarehouseServerError(
        f"cannot serve the warehouse on 127.0.0.1:{port}: the port is taken (or not allowed); "
        f"stop the program using it, or set {PORT_SETTING} to a free port"
    )
    # Quack binds with SO_REUSEPORT, so a second owner (of another database) would share the
    # port and the kernel would hand it half the clients: refuse a port something listens on.
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        pass  # refused: nobody listens there
    else:
        raise taken
    token = secrets.token_urlsafe(32)
    _write_private(token_path(database), token.encode())
    try:
        con.execute(f"CALL quack_serve('quack:localhost:{port}', token => '{token}')")
    except duckdb.Error as exc:
        if "bind" in str(exc).lower():
            raise taken from None
        raise WarehouseServerError(f"cannot serve the warehouse on port {port}: {exc}") from None
    endpoint = Endpoint(
        port=port,
        pid=engine_pid(),
        started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    _write_private(endpoint_path(database), msgspec.json.encode(endpoint))
    return endpoint


def stop(con: duckdb.DuckDBPyConnection, database: Path) -> None:
    """Remove the endpoint first (new clients stop coming), then stop the server."""
    import duckdb

    remove_endpoint(database)
    with contextlib.suppress(duckdb.Error):
        con.execute("CALL quack_stop()")


def remove_endpoint(database: Path) -> None:
    path = endpoint_path(database)
    with contextlib.suppress(FileNotFoundError, msgspec.DecodeError, OSError):
        ours = msgspec.json.decode(path.read_bytes(), type=Endpoint).pid == engine_pid()
        if ours:
            path.unlink()


def starting_path(database: Path) -> Path:
    return sibling(database, ".starting")


def announce_start(database: Path) -> None:
    """Tell clients an owner wants the file: they stop opening it themselves and wait for its
    endpoint (else clients that found no owner could keep it out, taking turns on the lock)."""
    path = starting_path(database)
    with contextlib.suppress(OSError):
        path.write_text(str(engine_pid()))


def withdraw_start(database: Path) -> None:
    path = starting_path(database)
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text() or 0) == engine_pid():
            path.unlink()


def owner_starting(database: Path) -> int | None:
    """The pid of another live process that announced it is becoming the owner."""
    try:
        pid = int(starting_path(database).read_text() or 0)
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and pid != engine_pid() and pid_alive(pid) else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_endpoint(database: Path) -> Endpoint | None:
    """The endpoint of an owner that is still alive; None when there is none (or it died)."""
    try:
        endpoint = msgspec.json.decode(endpoint_path(database).read_bytes(), type=Endpoint)
    except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    return endpoint if pid_alive(endpoint.pid) else None


def read_token(database: Path) -> str:
    path = token_path(database)
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise WarehouseServerError(
            f"cannot read the warehouse token {path}: {exc.strerror}; run as the user who runs "
            "the stream (the file is 0600), or restart the stream to write a new one"
        ) from None
    if not token:
        raise WarehouseServerError(f"the warehouse token file {path} is empty; restart the stream")
    return token
