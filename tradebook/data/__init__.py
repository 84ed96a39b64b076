"""Market data: loaders for every bundled format, validation and quality findings."""

from tradebook.data import frames  # noqa: F401  (registers the df.tb accessor)
from tradebook.data.catalog import BUNDLED_FILES, BundledFile, bundled_data_dir, iter_bundled, load_bundled
from tradebook.data.instruments import instrument_from_dict, load_instrument_file
from tradebook.data.loaders import (
    MarketData,
    QualityFinding,
    from_frame,
    load,
    load_bars,
    load_book,
    load_depth,
    load_quote_bars,
    load_quotes,
    load_trades,
)
from tradebook.data.schemas import SPECS, DataKind

__all__ = [
    "BUNDLED_FILES", "BundledFile", "DataKind", "MarketData", "QualityFinding", "SPECS", "bundled_data_dir",
    "from_frame", "instrument_from_dict", "iter_bundled", "load", "load_bars", "load_book", "load_bundled",
    "load_depth", "load_instrument_file", "load_quote_bars", "load_quotes", "load_trades",
]
