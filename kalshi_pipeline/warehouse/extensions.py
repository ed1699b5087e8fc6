"""DuckDB's Quack and httpfs extensions, loaded from the installed wheels, never the network.

The wheels `duckdb-extension-quack` and `duckdb-extension-httpfs` carry DuckDB's own signed
binaries under `<package>/extensions/v<duckdb version>/<name>.duckdb_extension`; `LOAD` of that
path works offline with signature checking left on. The shell (`duckdb-cli`) loads the same files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb

from kalshi_pipeline.warehouse.connection import WarehouseError

DUCKDB_VERSION = "1.5.5"
EXTENSIONS = ("httpfs", "quack")  # quack needs httpfs loaded first, on both ends


class ExtensionMissingError(WarehouseError):
    """An extension binary (or the DuckDB shell) is not installed where the wheel puts it."""


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def extension_path(name: str) -> Path:
    """The binary of extension `name`; raises naming the package to install when it is missing."""
    package = f"duckdb-extension-{name}"
    folder = _package_dir(package.replace("-", "_"))
    path = (
        folder / "extensions" / f"v{DUCKDB_VERSION}" / f"{name}.duckdb_extension"
        if folder is not None
        else None
    )
    if duckdb.__version__ != DUCKDB_VERSION or path is None or not path.is_file():
        raise ExtensionMissingError(
            f"the DuckDB extension {name!r} for DuckDB {DUCKDB_VERSION} is not installed "
            f"(DuckDB here is {duckdb.__version__}); install it with: "
            f"pip install 'duckdb=={DUCKDB_VERSION}' '{package}=={DUCKDB_VERSION}' "
            "(or reinstall kalshi_pipeline: pip install -e .)"
        )
    return path


def load_extensions(con: duckdb.DuckDBPyConnection) -> None:
    """Load httpfs and quack into `con` from the installed wheels."""
    for name in EXTENSIONS:
        path = extension_path(name)
        try:
            con.execute(f"LOAD '{path}'")
        except duckdb.Error as exc:
            raise ExtensionMissingError(
                f"cannot load the DuckDB extension {path}: {exc}; reinstall it with: "
                f"pip install --force-reinstall 'duckdb-extension-{name}=={DUCKDB_VERSION}'"
            ) from None


def shell_binary() -> Path:
    """The `duckdb` shell of the `duckdb-cli` wheel (same version as the Python package)."""
    folder = _package_dir("duckdb_cli")
    path = folder / "duckdb" if folder is not None else None
    if path is None or not path.is_file():
        raise ExtensionMissingError(
            f"the DuckDB shell is not installed; install it with: "
            f"pip install 'duckdb-cli=={DUCKDB_VERSION}'"
        )
    return path
