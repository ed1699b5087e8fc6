"""DuckDB warehouse: the owner that holds the file and serves it, the client every other process
uses (`connect()`), the schema and its migrations, the queries."""

from kalshi_pipeline.warehouse.client import Client, connect
from kalshi_pipeline.warehouse.connection import (
    Warehouse,
    WarehouseBusyError,
    WarehouseError,
    WarehouseVersionError,
)

__all__ = [
    "Client",
    "Warehouse",
    "WarehouseBusyError",
    "WarehouseError",
    "WarehouseVersionError",
    "connect",
]
