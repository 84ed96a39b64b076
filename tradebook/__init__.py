"""tradebook: from research to paper to live trading, in a notebook.

``import tradebook as tb`` stays light: panel, vectorbt, the broker SDKs and the
notebook machinery are imported only by the modules that need them.
"""

from tradebook.errors import (
    AmbiguousReadError,
    ConfigError,
    ConformanceError,
    DataError,
    OrderError,
    SchemaError,
    StoreError,
    StoreLockedError,
    TradebookError,
    UnknownInstrumentError,
)
from tradebook.model import BUNDLED_INSTRUMENTS, AssetClass, Instrument, Side, get_instrument, ns_to_iso, to_ns

__version__ = "0.1.0"

__all__ = [
    "AmbiguousReadError", "AssetClass", "BUNDLED_INSTRUMENTS", "ConfigError", "ConformanceError", "DataError",
    "Instrument", "SchemaError", "OrderError", "Session", "Side", "Signal", "Store", "StoreError", "StoreLockedError",
    "TradebookError", "UnknownInstrumentError", "alerts", "data", "paper", "research", "promotion", "Strategy", "Bars",
    "default_store_path", "get_instrument", "instrument_from_dict", "load_config", "ns_to_iso", "open_store", "to_ns",
]

_LAZY = {
    "Store": ("tradebook.store", "Store"),
    "open_store": ("tradebook.store", "open_store"),
    "default_store_path": ("tradebook.store", "default_store_path"),
    "instrument_from_dict": ("tradebook.data.instruments", "instrument_from_dict"),
    "Session": ("tradebook.session", "Session"),
    "Signal": ("tradebook.model.orders", "Signal"),
    "load_config": ("tradebook.config", "load_config"),
    "Strategy": ("tradebook.research.strategy", "Strategy"),
    "Bars": ("tradebook.research.bars", "Bars"),
}


def __dir__() -> list[str]:
    # tab completion in a notebook lists the lazy names too (tb.Session, tb.open_store, ...) without importing them
    return sorted(set(globals()) | set(__all__) | set(_LAZY))


def __getattr__(name: str):
    # Lazy so that `import tradebook` does not pull in pandas-heavy modules until used.
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    if name in ("alerts", "data", "paper", "research", "promotion"):  # subpackages: tb.data, tb.paper, ...
        import importlib

        return importlib.import_module(f"tradebook.{name}")
    raise AttributeError(f"module 'tradebook' has no attribute {name!r}")
