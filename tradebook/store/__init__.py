"""The DuckDB store: schema migrations, the single writer, reads as DataFrames."""

from tradebook.store.migrations import LATEST_VERSION, MIGRATIONS
from tradebook.store.calibrations import CalibrationRecord
from tradebook.store.market_data import IngestResult
from tradebook.store.store import DEFAULT_STORE_PATH, Store, default_store_path, open_store, workspace_root

__all__ = ["CalibrationRecord", "DEFAULT_STORE_PATH", "IngestResult", "LATEST_VERSION", "MIGRATIONS", "Store", "default_store_path",
           "open_store", "workspace_root"]
