"""The one way every process but the owner reaches the warehouse: `connect()`.

When an owner (the stream's writer) is serving, the client attaches to it over Quack and runs
each statement on the owner, whole: `FROM kalshi.query('<statement>')`. That is where DuckDB
1.5.5's Quack wants reads (a plain attached scan ships whole columns to the client), and it makes
every write a single server-side statement (a client's own transactions and bulk inserts are
not forwarded atomically in 1.5.5). When no owner is serving, the client opens the file itself
under `<db>.lock`, the lock an owner holds for its life. Callers see the same methods either way:

    from kalshi_pipeline.warehouse import connect
    with connect() as con:
        con.execute("SELECT count(*) FROM ticks").fetchall()

When the owner restarts under a client (killed, a handover), the client attaches again (or opens
the file) and re-runs the statement that found the owner gone; the user sees no error.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
from filelock import Timeout

from kalshi_pipeline.warehouse import server
from kalshi_pipeline.warehouse.connection import (
    WarehouseBusyError,
    WarehouseError,
    default_path,
    file_lock,
    open_file,
)
from kalshi_pipeline.warehouse.extensions import load_extensions
from kalshi_pipeline.warehouse.schema import migrate, refresh_macros
from kalshi_pipeline.warehouse.server import WarehouseServerError

ALIAS = "kalshi"  # the attached owner's catalog name, in this client and in the shell
# Statement types that only read; a read-only client refuses the others by name.
READ_TYPES = frozenset(
    {
        duckdb.StatementType.SELECT,
        duckdb.StatementType.EXPLAIN,
        duckdb.StatementType.PRAGMA,
    }
)
_DDL_TYPES = frozenset(
    {
        duckdb.StatementType.CREATE,
        duckdb.StatementType.DROP,
        duckdb.StatementType.ALTER,
    }
)
# What a client sees when the owner it attached to has gone (killed, stopped, restarted).
_OWNER_GONE = (
    "invalid connection id",
    "could not connect",
    "failed to send message",
    "connection refused",
    "failed to read",
    "connection reset",
)
RECONNECT_WAIT_S = 30.0  # how long a client waits for a new owner (or the file) after a restart


class WarehouseStatementError(WarehouseError):
    """A statement this client will not run (several at once, a write on a read-only client)."""


def sql_literal(value: Any) -> str:
    """`value` as a DuckDB SQL literal (statements sent to the owner travel as text)."""
    if value is None:
        return "NULL"
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()  # a numpy scalar from a computed column
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f"'{value}'::DOUBLE"
    if isinstance(value, Decimal):
        return f"{value:f}" if value.is_finite() else f"'{value}'::DOUBLE"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, datetime):
        kind = "TIMESTAMPTZ" if value.tzinfo is not None else "TIMESTAMP"
        return f"'{value.isoformat()}'::{kind}"
    if isinstance(value, date):
        return f"'{value.isoformat()}'::DATE"
    if isinstance(value, bytes):
        return "'" + "".join(f"\\x{b:02x}" for b in value) + "'::BLOB"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(sql_literal(v) for v in value) + "]"
    raise TypeError(f"cannot send a {type(value).__name__} as a SQL parameter: {value!r}")


def bind(sql: str, params: Sequence[Any]) -> str:
    """Replace each `?` outside quotes and comments with the next parameter as a literal."""
    out: list[str] = []
    values = iter(params)
    i, n, used = 0, len(sql), 0
    while i < n:
        ch = sql[i]
        if ch in "'\"":
            end = i + 1
            while end < n:
                if sql[end] == ch:
                    if end + 1 < n and sql[end + 1] == ch:
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[i : end + 1])
            i = end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end])
            i = end
        elif ch == "?":
            try:
                out.append(sql_literal(next(values)))
            except StopIteration:
                raise WarehouseStatementError(
                    f"the statement has more ? placeholders than the {used} parameters given"
                ) from None
            used += 1
            i += 1
        else:
            out.append(ch)
            i += 1
    if used != len(params):
        raise WarehouseStatementError(
            f"{len(params)} parameters given for {used} ? placeholders in the statement"
        )
    return "".join(out)


def values_table_sql(name: str, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    """One `CREATE OR REPLACE TABLE` statement holding these rows (types inferred by DuckDB)."""
    cols = ", ".join(f'"{c}"' for c in columns)
    body = ["(" + ", ".join(sql_literal(row.get(c)) for c in columns) + ")" for row in rows]
    if not body:
        typed = ", ".join(f'"{c}" VARCHAR' for c in columns)
        return f"CREATE OR REPLACE TABLE {name} ({typed})"
    return f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM (VALUES {', '.join(body)}) t({cols})"


def _without_wrapper(exc: duckdb.Error) -> duckdb.Error:
    """The owner's error as if the statement had run here: without the trailing excerpt of the
    `FROM kalshi.query('...')` wrapper that carried it."""
    text = str(exc)
    cut = text.rfind(f"\n\nLINE 1: FROM {ALIAS}.query(")
    if cut < 0:
        return exc
    try:
        return type(exc)(text[:cut])
    except Exception:
        return exc


def _holder_exiting(pid: int | None) -> bool:
    """Is the process DuckDB named as holding the file gone, or exiting (its memory, and so
    /proc/<pid>/exe, already released while its descriptors still close)?"""
    if pid is None:
        return False
    if not server.pid_alive(pid):
        return True
    try:
        os.readlink(f"/proc/{pid}/exe")
    except FileNotFoundError:
        return Path("/proc/self/exe").exists()  # where /proc exists, a missing exe: exiting
    except OSError:
        return False  # another user's process, or no /proc here
    return False


def _owner_gone(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(s in text for s in _OWNER_GONE)


class Client:
    """A session on the warehouse; not thread-safe (one per thread). Use `connect()`.

    Attached to an owner, it keeps one attachment and re-attaches when the owner is replaced.
    With no owner, it opens the file for each statement and closes it before returning the
    result, so a starting owner is never kept out by an idle session.
    """

    def __init__(self, path: Path, *, create: bool, read_only: bool, timeout_s: float) -> None:
        self.path = Path(path)
        self.create = create
        self.read_only = read_only
        self.timeout_s = timeout_s
        self._lock = file_lock(self.path)
        self._mem: duckdb.DuckDBPyConnection | None = duckdb.connect()
        self._endpoint: server.Endpoint | None = None  # set while attached to an owner
        self._loaded = False
        self._migrated = False
        self._held: duckdb.DuckDBPyConnection | None = None
        self._ready(time.monotonic() + timeout_s)

    def __repr__(self) -> str:
        return f"Client({str(self.path)!r})"

    # ------------------------------------------------------------------ statements

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> duckdb.DuckDBPyConnection:
        """Run ONE statement; the result is fetched from the returned cursor (`.fetchall()`,
        `.fetchone()`, `.df()`, `.arrow()`, `.description`), valid until the next statement."""
        statement = self._one_statement(sql)
        if self.read_only and statement.type not in READ_TYPES:
            raise WarehouseStatementError(
                f"this connection only reads, and the statement is a {statement.type.name}: "
                f"{short_sql(sql)}"
            )
        if statement.type == duckdb.StatementType.TRANSACTION:
            raise WarehouseStatementError(
                "transactions are not available to clients of the warehouse: each statement "
                "commits on its own (write a table with one CREATE OR REPLACE TABLE ... AS)"
            )
        text = bind(sql, list(params)) if params else sql
        deadline = time.monotonic() + max(RECONNECT_WAIT_S, self.timeout_s)
        while True:
            if self._endpoint is None:
                result = self._run_on_file(text, time.monotonic() + self.timeout_s)
                if result is not None:
                    return result
                continue  # an owner appeared meanwhile: attached now
            mem = self._memory()
            try:
                quoted = text.replace("'", "''")
                cur = mem.execute(f"FROM {ALIAS}.query('{quoted}')")
                if statement.type in _DDL_TYPES:
                    mem.execute("CALL quack_clear_cache()")
                    cur = mem.execute("SELECT true AS Success")
                return cur
            except duckdb.Error as exc:
                if not self._lost_owner(exc) or time.monotonic() > deadline:
                    raise _without_wrapper(exc) from None
            self._detach()
            time.sleep(0.05)
            self._ready(deadline)

    @contextlib.contextmanager
    def held(self) -> Iterator[Client]:
        """Keep the file open across the statements of the block when no owner serves it (for
        statements that build on each other's session state, such as an ATTACH); a no-op while
        attached to an owner, whose connection for this client lives as long as the client."""
        if self._endpoint is not None or self._held is not None:
            yield self
            return
        con = self._open_under_lock(time.monotonic() + self.timeout_s)
        if con is None:  # an owner appeared while we waited
            yield self
            return
        try:
            self._held = con
            yield self
        finally:
            held, self._held = self._held, None
            try:
                if held is not None:
                    held.close()
            finally:
                self._lock.release(force=True)

    def sql(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        """The result of one statement as a pandas DataFrame (for notebooks)."""
        return self.execute(sql, params).df()

    def statements(self, sql: str) -> list[str]:
        """The statements in `sql`, each as its own text (for callers that run several)."""
        return [s.query.strip() for s in self._memory().extract_statements(sql)]

    # ------------------------------------------------------------------ life

    def close(self) -> None:
        mem, self._mem = self._mem, None
        self._endpoint = None
        if mem is not None:
            with contextlib.suppress(duckdb.Error):
                mem.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _memory(self) -> duckdb.DuckDBPyConnection:
        if self._mem is None:
            raise WarehouseError(f"this connection to {self.path} is closed")
        return self._mem

    def _one_statement(self, sql: str) -> Any:
        parsed = self._memory().extract_statements(sql)
        if len(parsed) != 1:
            raise WarehouseStatementError(
                f"one statement at a time, and this text holds {len(parsed)}: {short_sql(sql)}"
            )
        return parsed[0]

    def _lost_owner(self, exc: BaseException) -> bool:
        """The owner we attached to is gone (or replaced by one with a new token)."""
        if _owner_gone(exc):
            return True
        if "authentication" in str(exc).lower():
            now = server.live_endpoint(self.path)
            if now != self._endpoint:
                return True
            raise WarehouseStatementError(
                f"the warehouse server refused this client's token: {exc}; the token is read "
                f"from {server.token_path(self.path)} (readable only by the user who runs the "
                "stream)"
            ) from None
        return False

    def _detach(self) -> None:
        if self._endpoint is not None:
            self._endpoint = None
            with contextlib.suppress(duckdb.Error):
                self._memory().execute(f"DETACH {ALIAS}")

    def _ready(self, deadline: float) -> None:
        """Attach to a live owner if there is one; else check the file can be used directly."""
        endpoint = server.live_endpoint(self.path)
        if endpoint is not None and self._attach(endpoint, deadline):
            return
        if self.create and not self._migrated:
            self._run_on_file("SELECT 1", deadline)  # create the file and its schema now
        elif not self.create and not self.path.exists():
            raise WarehouseError(
                f"the database {self.path} does not exist yet: start the stream first "
                "(make run, or kalshi-pipeline stream)"
            )

    def _acquire(self, deadline: float) -> None:
        """Take the file lock; returns early, attached, if an owner appears meanwhile. While
        an owner is starting, wait for it rather than compete with it for the file."""
        while True:
            endpoint = server.live_endpoint(self.path)
            if endpoint is not None and self._attach(endpoint, deadline):
                return
            starting = server.owner_starting(self.path)
            if starting is None:
                try:
                    self._lock.acquire(timeout=0.05, poll_interval=0.005)
                    return
                except Timeout:
                    pass
            else:
                time.sleep(0.05)
            if time.monotonic() > deadline:
                if starting is not None:
                    raise WarehouseBusyError(
                        f"the database {self.path} is not served yet: the stream (pid {starting}) "
                        "is waiting to open it; is another program holding the file?"
                    )
                raise WarehouseBusyError(
                    f"the database {self.path} stayed busy: another kalshi_pipeline process "
                    f"holds {self._lock.lock_file} but serves no endpoint "
                    f"({server.endpoint_path(self.path)})"
                )

    def _run_on_file(self, text: str, deadline: float) -> duckdb.DuckDBPyConnection | None:
        """Run `text` on the file under the lock and close it again; None when an owner
        appeared while we waited for the lock (the client is attached to it then)."""
        if self._held is not None:
            table = self._held.execute(text).to_arrow_table()
        else:
            con = self._open_under_lock(deadline)
            if con is None:
                return None
            try:
                table = con.execute(text).to_arrow_table()
            finally:
                try:
                    con.close()
                finally:
                    self._lock.release(force=True)
        mem = self._memory()
        mem.register("_kp_result", table)
        return mem.execute("FROM _kp_result")

    def _open_under_lock(self, deadline: float) -> duckdb.DuckDBPyConnection | None:
        """The file opened under the lock (the caller closes it, then releases the lock);
        None when an owner appeared while we waited (the client is attached to it then).

        DuckDB's own lock on the file can outlive ours for a moment: an owner killed with
        SIGKILL closes its descriptors one by one as it exits, and the lock file may be free
        before the database is. A holder that is exiting is waited for; any other holder (a
        DuckDB shell on the file) is reported at once, saying what to use instead."""
        while True:
            self._acquire(deadline)
            if self._endpoint is not None:
                return None
            try:
                return self._open_file()
            except WarehouseBusyError as exc:
                self._lock.release(force=True)
                if time.monotonic() > deadline or not _holder_exiting(exc.holder_pid):
                    raise
            except BaseException:  # a DuckDB 2.x file, a failed migration: the lock goes back
                self._lock.release(force=True)
                raise
            time.sleep(0.02)

    def _open_file(self) -> duckdb.DuckDBPyConnection:
        if not self.path.exists() and (self.read_only or not self.create):
            raise WarehouseError(
                f"the database {self.path} does not exist yet: start the stream first "
                "(make run, or kalshi-pipeline stream)"
            )
        if self.read_only:
            return open_file(self.path, read_only=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = open_file(self.path)
        if not self._migrated:
            try:
                migrate(con)
                refresh_macros(con)
            except BaseException:
                con.close()
                raise
            self._migrated = True
        return con

    def _attach(self, endpoint: server.Endpoint, deadline: float) -> bool:
        """Attach to the owner at `endpoint`; False if it went away meanwhile."""
        token = server.read_token(self.path)
        mem = self._memory()
        if not self._loaded:
            load_extensions(mem)
            self._loaded = True
        try:
            mem.execute(
                f"CREATE OR REPLACE TEMPORARY SECRET kalshi_warehouse (TYPE quack, TOKEN '{token}')"
            )
            mem.execute(f"ATTACH '{endpoint.uri}' AS {ALIAS}")
            try:
                served = mem.execute(
                    f"FROM {ALIAS}.query('SELECT path FROM duckdb_databases() "
                    "WHERE database_name = current_database()')"
                ).fetchone()
            except duckdb.Error:
                with contextlib.suppress(duckdb.Error):
                    mem.execute(f"DETACH {ALIAS}")
                raise
            if not served or Path(served[0]).resolve() != self.path.resolve():
                mem.execute(f"DETACH {ALIAS}")
                raise WarehouseServerError(
                    f"port {endpoint.port} (from {server.endpoint_path(self.path)}) serves "
                    f"{served[0] if served else 'another database'}, not {self.path}: two "
                    f"streams share {server.PORT_SETTING}? Give each its own port"
                )
        except duckdb.Error as exc:
            if "authentication" in str(exc).lower():
                with contextlib.suppress(WarehouseError):
                    if server.read_token(self.path) != token:
                        time.sleep(0.05)
                        return False  # a new owner wrote its token meanwhile: try again
                raise WarehouseStatementError(
                    f"the warehouse server on port {endpoint.port} refused the token in "
                    f"{server.token_path(self.path)}; it is rewritten at every start of the "
                    "stream: read it as the user who runs the stream"
                ) from None
            if _owner_gone(exc):
                return False
            raise
        self._endpoint = endpoint
        return True


def short_sql(sql: str, limit: int = 120) -> str:
    one_line = " ".join(sql.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def connect(
    path: str | Path | None = None,
    *,
    create: bool = False,
    read_only: bool = False,
    timeout_s: float = 60.0,
) -> Client:
    """A session on the warehouse (default KALSHI_DUCKDB_PATH, else data/kalshi.duckdb).

    `create`: make the file (with the schema) when it does not exist and no owner serves it.
    `read_only`: refuse statements that write. `timeout_s`: how long to wait while another
    kalshi_pipeline process holds the file without serving it.
    """
    return Client(
        Path(path) if path is not None else default_path(),
        create=create,
        read_only=read_only,
        timeout_s=timeout_s,
    )
