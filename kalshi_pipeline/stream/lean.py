"""A process that only streams keeps its memory lean: `lean()` at its start.

Pandas is kept out: about 30 MB of memory it never uses.

DuckDB imports pandas the first time it binds a Python parameter (to ask whether the value is
pandas's NA or NaT), and pyarrow the first time it converts a Python list (to ask whether it is
a pandas object); the stream never hands either a pandas object. The store process (`store.py`,
where the writer meets DuckDB and Arrow) calls `lean()` before it imports them, whoever started
its engine, and both libraries then work as they do where pandas is not installed (measured:
peak RSS at the 50,000 ticks/s firehose, see the README). The engine's own process imports
neither DuckDB nor Arrow; `kalshi-pipeline stream` and the bench's engines keep pandas out of it
too (`keep_pandas_out()`). The Dagster op does not: its process is Dagster's, and other code
there may use pandas.

The store process keeps numpy out too (about 12 MB): neither DuckDB nor pyarrow needs it (both
work where it is not installed), and the writer hands them Arrow arrays built from Python lists.

And `pyarrow.dataset` (about 17 MB, with the Parquet, S3, Acero and Substrait libraries it loads):
DuckDB imports it the first time it scans an Arrow table, only to ask whether the object is a
dataset; where the import fails it scans the table as it would anyway (a table, a record batch,
a reader: checked by the tests).

Arrow's buffers come from the system allocator instead of pyarrow's default (mimalloc), which
keeps freed segments for reuse: every batch builds a few MB of Arrow arrays, and with mimalloc
the stream's peak RSS at the 50,000 ticks/s firehose was 7-9 MB higher (quick bench runs, 229 ->
220-223 MB).
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any


class PackageKeptOut(ImportError):
    """An import of a package (pandas, numpy, pyarrow.dataset) in a process that keeps it out."""


class _KeptOut(importlib.abc.MetaPathFinder):
    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == self.name or fullname.startswith(self.name + "."):
            raise PackageKeptOut(
                f"{self.name} is kept out of this streaming process to save memory "
                "(kalshi_pipeline.stream.lean); query the warehouse from another process"
            )
        return None


def keep_out(name: str) -> bool:
    """Block importing the package `name` in this process from now on; False (nothing done)
    when it is imported already."""
    if name in sys.modules:
        return False
    if not any(isinstance(f, _KeptOut) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _KeptOut(name))
    return True


def keep_pandas_out() -> bool:
    """Block importing pandas in this process from now on (see `keep_out`)."""
    return keep_out("pandas")


def lean() -> None:
    """Start of a process that only stores: pandas, numpy and pyarrow.dataset kept out, Arrow
    on the system allocator."""
    keep_pandas_out()
    keep_out("numpy")
    keep_out("pyarrow.dataset")
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
