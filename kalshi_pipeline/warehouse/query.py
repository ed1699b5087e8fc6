"""Analysts' queries for `kalshi-pipeline sql`: read-only, several statements all or none."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
from tabulate import tabulate

from kalshi_pipeline.warehouse.client import connect, short_sql
from kalshi_pipeline.warehouse.connection import WarehouseError


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


class StatementFailedError(WarehouseError):
    """One of the statements failed; the message names which, and nothing was printed."""


def run_sql(database: Path, sql: str, *, timeout_s: float = 60.0) -> list[QueryResult]:
    """Run every statement in `sql`, read-only; all results, or an error naming the statement
    that failed (the caller prints nothing then)."""
    results: list[QueryResult] = []
    with connect(database, read_only=True, timeout_s=timeout_s) as con:
        try:
            statements = con.statements(sql)
        except duckdb.Error as exc:
            raise StatementFailedError(f"{type(exc).__name__}: {exc}") from None
        if not statements:
            raise StatementFailedError("no SQL statement given")
        for i, statement in enumerate(statements, 1):
            try:
                cur = con.execute(statement)
                columns = [d[0] for d in cur.description] if cur.description else []
                rows = cur.fetchall() if columns else []
            except (duckdb.Error, WarehouseError) as exc:
                which = (
                    f"statement {i} of {len(statements)}"
                    if len(statements) > 1
                    else "the statement"
                )
                raise StatementFailedError(
                    f"{which} failed ({short_sql(statement, 80)}): {type(exc).__name__}: {exc}"
                ) from None
            results.append(QueryResult(columns, rows))
    return results


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def render(result: QueryResult, fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(
            [dict(zip(result.columns, map(_plain, r), strict=True)) for r in result.rows],
            indent=1,
            default=str,
        )
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(result.columns)
        writer.writerows([_plain(v) for v in r] for r in result.rows)
        return out.getvalue().rstrip("\n")
    if fmt == "table":
        return tabulate(
            [[_plain(v) for v in r] for r in result.rows],
            headers=result.columns,
            tablefmt="github",
            disable_numparse=True,
        )
    raise ValueError(f"format {fmt!r} must be table, csv or json")
