"""The bottom layer: instruments, sides, time. Imports nothing else of tradebook but errors."""

from tradebook.model.instruments import (
    BUNDLED_INSTRUMENTS,
    AssetClass,
    Instrument,
    Side,
    TradingHours,
    get_instrument,
    to_decimal,
)
from tradebook.model.time import NS_PER_DAY, NS_PER_SECOND, ns_to_iso, to_ns

__all__ = [
    "BUNDLED_INSTRUMENTS", "AssetClass", "Instrument", "NS_PER_DAY", "NS_PER_SECOND", "Side", "TradingHours",
    "get_instrument", "ns_to_iso", "to_decimal", "to_ns",
]
