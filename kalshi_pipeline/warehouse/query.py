"""Analyst queries on short read-only connections, retried while the file is busy."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from tabulate import tabulate

from kalshi_pipeline.warehouse.connection import Warehouse


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def run_sql(database: Path, sql: str, *, timeout_s: float = 60.0) -> QueryResult:
    """Run one statement read-only; the connection is held only while it runs."""
    with Warehouse(database).connect(read_only=True, timeout_s=timeout_s) as con:
        cur = con.execute(sql)
        columns = [d[0] for d in cur.description] if cur.description else []
        rows = cur.fetchall() if columns else []
    return QueryResult(columns, rows)


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
