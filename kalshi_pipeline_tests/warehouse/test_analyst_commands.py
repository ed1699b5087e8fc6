"""`kalshi-pipeline sql` and `kalshi-pipeline shell`, with a stream serving the file and without."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kalshi_pipeline.warehouse import Warehouse
from kalshi_pipeline.warehouse.server import token_path
from kalshi_pipeline_tests.warehouse.test_server import OwnerProcess

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kalshi_pipeline.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


@pytest.fixture(params=["served", "file"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """The warehouse with a stream's writer serving it, or a file nobody holds."""
    path = tmp_path / "data" / "kalshi.duckdb"
    owner = None
    if request.param == "served":
        owner = OwnerProcess(path)
    else:
        Warehouse(path).migrate()
        with Warehouse(path).connect() as con:
            con.execute(
                "INSERT INTO feed_events (occurred_at, source, kind, detail) "
                "VALUES (now(), 'engine', 'beat', '0')"
            )
    try:
        yield path
    finally:
        if owner is not None:
            owner.stop()


def test_sql_prints_every_statement_in_order(db: Path) -> None:
    run = cli(
        "sql",
        "--database",
        str(db),
        "--format",
        "json",
        "SELECT count(*) > 0 AS beats FROM feed_events WHERE kind = 'beat'; SELECT 'a;b' AS s",
    )
    assert run.returncode == 0, run.stderr
    first, second = run.stdout.strip().split("\n\n")
    assert json.loads(first) == [{"beats": True}]
    assert json.loads(second) == [{"s": "a;b"}]


def test_sql_with_a_failing_statement_prints_nothing_and_names_it(db: Path) -> None:
    run = cli("sql", "--database", str(db), "SELECT 1 AS one; SELECT nope FROM ticks")
    assert run.returncode == 1
    assert run.stdout == ""
    assert "statement 2 of 2" in run.stderr and "SELECT nope FROM ticks" in run.stderr
    assert "kalshi.query" not in run.stderr  # the server's wrapper is not the user's problem
    assert "Traceback" not in run.stderr


def test_sql_refuses_to_write(db: Path) -> None:
    run = cli("sql", "--database", str(db), "DELETE FROM feed_events")
    assert run.returncode == 1 and "only reads" in run.stderr and "DELETE" in run.stderr


def test_sql_piped_into_head_ends_quietly(db: Path) -> None:
    cmd = (
        f"{sys.executable} -m kalshi_pipeline.cli sql --database {db} "
        "'SELECT * FROM range(200000)' | head -3"
    )
    run = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert len(run.stdout.splitlines()) == 3
    assert run.stderr == "", run.stderr
    assert run.returncode in (0, 141)  # 141: head closed the pipe (pipefail), never a traceback


def test_shell_reaches_the_tables_by_name_and_says_how_it_is_connected(db: Path) -> None:
    run = cli(
        "shell",
        "--database",
        str(db),
        stdin="SELECT 'beats=' || (count(*) > 0) FROM feed_events WHERE kind = 'beat';\n",
    )
    assert run.returncode == 0, run.stderr
    first = run.stdout.splitlines()[0]
    if token_path(db).exists():
        assert first.startswith("Attached to the live warehouse") and "kalshi" in first
        assert token_path(db).read_text().strip() not in run.stdout + run.stderr
    else:
        assert first.startswith("No stream is serving")
    assert "beats=true" in run.stdout
