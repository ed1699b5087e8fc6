"""DuckDB warehouse: the owner that holds the file and serves it, the client every other process
uses (`connect()`), the schema and its migrations, the queries."""

from typing import TYPE_CHECKING, Any

from kalshi_pipeline.warehouse.connection import (
    Warehouse,
    WarehouseBusyError,
    WarehouseError,
    WarehouseVersionError,
)

if TYPE_CHECKING:
    from kalshi_pipeline.warehouse.client import Client, connect


def __getattr__(name: str) -> Any:
    """The client (and DuckDB with it) is imported on first use: the stream's receiving process
    imports this package for its errors and files and never opens DuckDB (`stream/store.py`)."""
    if name in ("Client", "connect"):
        from kalshi_pipeline.warehouse import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Client",
    "Warehouse",
    "WarehouseBusyError",
    "WarehouseError",
    "WarehouseVersionError",
    "connect",
]
