"""tradebook: from research to paper to live trading, in a notebook.

``import tradebook as tb`` stays light: panel, vectorbt, the broker SDKs and the
notebook machinery are imported only by the modules that need them.
"""

from tradebook.errors import (
    ConfigError,
    ConformanceError,
    DataError,
    SchemaError,
    StoreError,
    StoreLockedError,
    TradebookError,
    UnknownInstrumentError,
)
from tradebook.model import BUNDLED_INSTRUMENTS, AssetClass, Instrument, Side, get_instrument, ns_to_iso, to_ns

__version__ = "0.1.0"

__all__ = [
    "AssetClass", "BUNDLED_INSTRUMENTS", "ConfigError", "ConformanceError", "DataError", "Instrument", "SchemaError",
    "Side", "Store", "StoreError", "StoreLockedError", "TradebookError", "UnknownInstrumentError", "data",
    "get_instrument", "ns_to_iso", "open_store", "to_ns",
]


def __getattr__(name: str):
    # Lazy so that `import tradebook` does not pull in pandas-heavy modules until used.
    if name == "Store":
        from tradebook.store import Store

        return Store
    if name == "open_store":
        from tradebook.store import open_store

        return open_store
    if name == "data":
        import tradebook.data as data

        return data
    raise AttributeError(f"module 'tradebook' has no attribute {name!r}")
