"""What each kind of market data looks like, in files and in memory.

One :class:`KindSpec` per kind says which columns a file must carry, which it may
carry, their types, which may be empty, and which are prices or sizes. The loader
enforces the spec; the store's tables mirror the canonical columns.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class DataKind(enum.StrEnum):
    QUOTES = "quotes"  # L1: best bid/ask with sizes
    TRADES = "trades"  # one row per trade print
    TRADE_BARS = "trade_bars"  # OHLCV bars of trades (daily, minute, second)
    QUOTE_BARS = "quote_bars"  # OHLC bars of the best bid and ask
    ADJUSTMENT_FACTORS = "adjustment_factors"  # split and dividend factors for daily bars
    DEPTH = "depth"  # L2: a full snapshot followed by per-level diffs
    BOOK = "book"  # top-N levels per row (rebuilt book snapshots)
    MBP1 = "mbp1"  # market-by-price level-1 events (action, side, price, size + resulting top of book)


# Column types: int = int64, Int = nullable int64, float = float64, str = text, flag = 0/1 -> bool
ColumnType = str


@dataclass(frozen=True)
class KindSpec:
    kind: DataKind
    required: dict[str, ColumnType]
    optional: dict[str, ColumnType] = field(default_factory=dict)
    nullable: frozenset[str] = frozenset()
    prices: tuple[str, ...] = ()
    sizes: tuple[str, ...] = ()
    # accepted in files, checked where a check exists (ts_iso, symbol), not kept
    informational: frozenset[str] = frozenset({"ts_iso", "symbol", "date", "session_date"})
    # allowed values for text columns
    choices: dict[str, frozenset[str]] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        """Canonical in-memory columns, in order."""
        return ["ts_ns", *[c for c in self.required if c != "ts_ns"], *self.optional]

    def column_type(self, name: str) -> ColumnType:
        return self.required.get(name) or self.optional[name]


_BID_ASK_BAR = {
    "bid_open": "float",
    "bid_high": "float",
    "bid_low": "float",
    "bid_close": "float",
    "last_bid_size": "float",
    "ask_open": "float",
    "ask_high": "float",
    "ask_low": "float",
    "ask_close": "float",
    "last_ask_size": "float",
}

BOOK_LEVELS_MAX = 10


def _book_columns(levels: int) -> dict[str, ColumnType]:
    cols: dict[str, ColumnType] = {}
    for i in range(levels):
        cols |= {f"bid_px_{i}": "float", f"bid_sz_{i}": "float", f"ask_px_{i}": "float", f"ask_sz_{i}": "float"}
    return cols


SPECS: dict[DataKind, KindSpec] = {
    DataKind.QUOTES: KindSpec(
        DataKind.QUOTES,
        required={"ts_ns": "int", "bid_px": "float", "ask_px": "float"},
        optional={
            "bid_sz": "float",
            "ask_sz": "float",
            "ts_event_ns": "Int",
            "update_id": "Int",
            "bid_venue": "str",
            "ask_venue": "str",
        },
        nullable=frozenset({"ts_event_ns", "update_id", "bid_venue", "ask_venue", "bid_sz", "ask_sz"}),
        prices=("bid_px", "ask_px"),
        sizes=("bid_sz", "ask_sz"),
    ),
    DataKind.TRADES: KindSpec(
        DataKind.TRADES,
        required={"ts_ns": "int", "price": "float", "size": "float"},
        optional={
            "ts_event_ns": "Int",
            "ts_trade_ns": "Int",
            "trade_id": "Int",
            "sequence": "Int",
            "aggressor_side": "str",
            "venue": "str",
            "conditions": "str",
            "flags": "Int",
            "suspicious": "flag",
        },
        nullable=frozenset(
            {"ts_event_ns", "ts_trade_ns", "trade_id", "sequence", "aggressor_side", "venue", "conditions", "flags",
             "suspicious"}
        ),
        prices=("price",),
        sizes=("size",),
        informational=frozenset({"ts_iso", "symbol", "buyer_is_maker"}),
        choices={"aggressor_side": frozenset({"BUY", "SELL", "NONE"})},
    ),
    DataKind.TRADE_BARS: KindSpec(
        DataKind.TRADE_BARS,
        required={"ts_ns": "int", "open": "float", "high": "float", "low": "float", "close": "float",
                  "volume": "float"},
        prices=("open", "high", "low", "close"),
        sizes=("volume",),
    ),
    DataKind.QUOTE_BARS: KindSpec(
        DataKind.QUOTE_BARS,
        required={"ts_ns": "int", **_BID_ASK_BAR},
        prices=("bid_open", "bid_high", "bid_low", "bid_close", "ask_open", "ask_high", "ask_low", "ask_close"),
        sizes=("last_bid_size", "last_ask_size"),
    ),
    DataKind.ADJUSTMENT_FACTORS: KindSpec(
        DataKind.ADJUSTMENT_FACTORS,
        required={"ts_ns": "int", "price_factor": "float", "split_factor": "float", "reference_price": "float"},
    ),
    DataKind.DEPTH: KindSpec(
        DataKind.DEPTH,
        required={"ts_ns": "int", "kind": "str", "last_update_id": "int", "side": "str", "price": "float",
                  "qty": "float"},
        optional={"ts_event_ns": "Int", "first_update_id": "Int"},
        nullable=frozenset({"ts_event_ns", "first_update_id"}),
        prices=("price",),
        sizes=("qty",),
        choices={"kind": frozenset({"snapshot", "diff"}), "side": frozenset({"bid", "ask"})},
    ),
    DataKind.BOOK: KindSpec(
        DataKind.BOOK,
        required={"ts_ns": "int", "bid_px_0": "float", "bid_sz_0": "float", "ask_px_0": "float",
                  "ask_sz_0": "float"},
        optional={"ts_event_ns": "Int", **{k: v for k, v in _book_columns(BOOK_LEVELS_MAX).items()
                                            if not k.endswith("_0")}},
        nullable=frozenset({"ts_event_ns", *[k for k in _book_columns(BOOK_LEVELS_MAX) if not k.endswith("_0")]}),
        prices=tuple(k for k in _book_columns(BOOK_LEVELS_MAX) if "_px_" in k),
        sizes=tuple(k for k in _book_columns(BOOK_LEVELS_MAX) if "_sz_" in k),
    ),
    DataKind.MBP1: KindSpec(
        DataKind.MBP1,
        required={"ts_ns": "int", "action": "str", "side": "str", "price": "float", "size": "float",
                  "bid_px": "float", "bid_sz": "float", "ask_px": "float", "ask_sz": "float"},
        optional={"ts_event_ns": "Int", "flags": "Int", "sequence": "Int", "bid_ct": "Int", "ask_ct": "Int"},
        nullable=frozenset({"ts_event_ns", "flags", "sequence", "bid_ct", "ask_ct"}),
        prices=("price", "bid_px", "ask_px"),
        sizes=("size", "bid_sz", "ask_sz"),
        choices={"action": frozenset({"A", "C", "M", "T", "F", "R", "N"}), "side": frozenset({"A", "B", "N"})},
    ),
}

# Column names in the wild mapped to the canonical ones above.
ALIASES: dict[str, str] = {
    "cond_hex": "conditions",
    "qty": "size",  # trades only; depth keeps qty (see loader)
    "bid_size": "bid_sz",
    "ask_size": "ask_sz",
}
