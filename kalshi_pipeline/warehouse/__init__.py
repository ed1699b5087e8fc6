"""DuckDB warehouse: schema and migrations, short locked connections, loads and queries."""

from kalshi_pipeline.warehouse.connection import Warehouse, WarehouseBusyError, WarehouseError

__all__ = ["Warehouse", "WarehouseBusyError", "WarehouseError"]
