"""`kalshi-pipeline shell`: DuckDB's own interactive shell on the live data.

While the stream's writer serves the warehouse, the shell (the `duckdb-cli` wheel's binary, the
same DuckDB version) loads Quack from the installed wheels, attaches to the writer with the token
and `USE`s the attachment, so tables are reachable by name. The commands carrying the token go
through a 0600 init file in a private temporary folder, never the command line (which other users
can read in `ps`). With no writer serving, the shell opens the file itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from kalshi_pipeline.warehouse import server
from kalshi_pipeline.warehouse.client import ALIAS
from kalshi_pipeline.warehouse.connection import (
    WarehouseError,
    check_storage_version,
)
from kalshi_pipeline.warehouse.extensions import extension_path, shell_binary


def _attach_script(database: Path, endpoint: server.Endpoint) -> str:
    token = server.read_token(database)
    loads = "".join(f"LOAD '{extension_path(name)}';\n" for name in ("httpfs", "quack"))
    return (
        ".output /dev/null\n"
        f"{loads}"
        f"CREATE TEMPORARY SECRET kalshi_warehouse (TYPE quack, TOKEN '{token}');\n"
        f"ATTACH '{endpoint.uri}' AS {ALIAS};\n"
        f"USE {ALIAS};\n"
        ".output\n"
    )


def banner(database: Path, endpoint: server.Endpoint | None) -> str:
    if endpoint is not None:
        return (
            f"Attached to the live warehouse {database} (served by the stream, pid "
            f"{endpoint.pid}) as '{ALIAS}', in use: tables by name (SELECT count(*) FROM ticks). "
            f"Large scans run faster on the server: FROM {ALIAS}.query('SELECT ...'). "
            f"After creating a table, CALL quack_clear_cache() to see it. .quit to leave."
        )
    return (
        f"No stream is serving {database}: this shell opened the file itself. A stream started "
        "now waits, receiving into its landing log, until you leave (.quit)."
    )


def run(database: Path, extra_args: list[str] | None = None) -> int:
    """Run the shell in the foreground (stdin and stdout are the user's); its exit status."""
    binary = shell_binary()
    endpoint = server.live_endpoint(database)
    print(banner(database, endpoint), flush=True)
    if endpoint is None:
        if not database.exists():
            raise WarehouseError(
                f"the database {database} does not exist yet: start the stream first "
                "(make run, or kalshi-pipeline stream)"
            )
        check_storage_version(database)
        return subprocess.call([str(binary), *(extra_args or []), str(database)])
    with tempfile.TemporaryDirectory(prefix="kalshi-shell-") as folder:
        init = Path(folder) / "init.sql"
        fd = os.open(init, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_attach_script(database, endpoint))
        return subprocess.call([str(binary), "-init", str(init), *(extra_args or [])])


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
