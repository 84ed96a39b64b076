"""Real order books, sampled at chosen times, and what walking them would have cost.

The paper-fill simulator guesses what a marketable order would have paid from what
it can see (usually L1). To know how good those guesses are we need the answer the
market actually gave: the visible book at the decision time, and the price of
eating through it. This module rebuilds that book from recorded data (Binance L2
diffs, CME top-5 book rows) and walks it, vectorised over many sample times.

Times are int64 UTC nanoseconds. A book "as of" time ``t`` is the state after every
message stamped ``ts_ns <= t`` (the capture clock, which orders one capture's
streams consistently; see ``data/MANIFEST.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd

from tradebook.errors import DataError
from tradebook.model.time import to_ns

# CME Globex reopened after Christmas 2023 at 17:00 CT = 23:00 UTC. Rows of the ESH4
# top-5 book before this instant are pre-open auction states (59 of 60 crossed or
# locked): a marketable order could not have traded against them.
ESH4_20231225_OPEN_NS: int = to_ns("2023-12-25T23:00:00Z")

_BOOK_FIELDS = ("bid_px", "bid_sz", "ask_px", "ask_sz")


def as_ns_array(values: np.ndarray | pd.Series | list | int, what: str = "sample_ts_ns") -> np.ndarray:
    """``values`` as a 1-D int64 array of UTC nanoseconds, or DataError.

    Floats are refused rather than cast: a float64 cannot hold a 2024 timestamp to
    the nanosecond (it keeps ~16 digits), so a silent cast would move samples.
    """
    array = np.asarray(values)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise DataError(f"{what} must be 1-D, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{what} has dtype {array.dtype}; expected int64 nanoseconds since the epoch, UTC")
    return array.astype(np.int64, copy=False)


def parse_side(side: str | int, what: str = "side") -> int:
    """+1 for a buy, -1 for a sell, from 'buy'/'sell' (any case), a Side, or +1/-1."""
    if isinstance(side, (int, np.integer)) and not isinstance(side, bool) and int(side) in (1, -1):
        return int(side)
    text = str(side).strip().lower()
    if text in ("buy", "b", "bid"):
        return 1
    if text in ("sell", "s", "ask"):
        return -1
    raise DataError(f"{what} is {side!r}; expected 'buy' or 'sell' (or +1 / -1)")


@dataclass(frozen=True, eq=False)
class BookSnapshots:
    """The visible book at ``n`` sample times: ``levels`` price levels per side.

    ``bid_px``/``bid_sz``/``ask_px``/``ask_sz`` are float64 arrays shaped
    ``(n, levels)``, level 0 being the touch; NaN where the book has fewer levels
    (or no state yet). ``update_id`` is, for a rebuilt Binance book, the last
    exchange update id applied (-1 before the book exists): it lets the rebuild be
    checked against the bookTicker stream by id rather than by the capture clock.
    """

    ts_ns: np.ndarray
    bid_px: np.ndarray
    bid_sz: np.ndarray
    ask_px: np.ndarray
    ask_sz: np.ndarray
    update_id: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.ts_ns)
        shapes = {name: np.shape(getattr(self, name)) for name in _BOOK_FIELDS}
        if len(set(shapes.values())) != 1 or len(shapes["bid_px"]) != 2 or shapes["bid_px"][0] != n:
            raise DataError(f"book arrays must all be shaped (n_samples={n}, levels); got {shapes}")
        if self.update_id is not None and np.shape(self.update_id) != (n,):
            raise DataError(f"update_id must be shaped ({n},), got {np.shape(self.update_id)}")

    def __len__(self) -> int:
        return len(self.ts_ns)

    @property
    def levels(self) -> int:
        return self.bid_px.shape[1]

    @property
    def mid(self) -> np.ndarray:
        """Mid of the touch; NaN where a side is empty."""
        return (self.bid_px[:, 0] + self.ask_px[:, 0]) / 2.0 if self.levels else np.full(len(self), np.nan)

    @property
    def two_sided(self) -> np.ndarray:
        """Both touches present and bid < ask: the samples a marketable order could have traded on."""
        if not self.levels:
            return np.zeros(len(self), bool)
        bid, ask = self.bid_px[:, 0], self.ask_px[:, 0]
        with np.errstate(invalid="ignore"):
            return np.isfinite(bid) & np.isfinite(ask) & (bid < ask)

    def select(self, mask: np.ndarray) -> BookSnapshots:
        """The samples where ``mask`` (bool, or integer positions) holds."""
        mask = np.asarray(mask)
        return BookSnapshots(
            ts_ns=self.ts_ns[mask],
            bid_px=self.bid_px[mask],
            bid_sz=self.bid_sz[mask],
            ask_px=self.ask_px[mask],
            ask_sz=self.ask_sz[mask],
            update_id=None if self.update_id is None else self.update_id[mask],
        )

    def walk(self, side: str | int, quantity: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Walk the visible book with a marketable order of ``quantity`` at every sample.

        A buy eats the asks from the touch outwards, a sell the bids. Returns
        ``(avg_price, filled_qty)``: the VWAP of what the visible levels could fill
        and how much that is (less than ``quantity`` when the visible book is too
        thin; NaN price when nothing could be filled). Hidden and refilled
        liquidity are not modelled: this is what the book *showed*.
        """
        avg, filled, _worst, _used = self.walk_detail(side, quantity)
        return avg, filled

    def walk_detail(
        self, side: str | int, quantity: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Like :meth:`walk`, plus the worst price reached and the number of levels touched."""
        direction = parse_side(side)
        px, sz = (self.ask_px, self.ask_sz) if direction > 0 else (self.bid_px, self.bid_sz)
        qty = np.broadcast_to(np.asarray(quantity, dtype=np.float64), (len(self),))
        if np.isnan(qty).any() or (qty < 0).any():
            raise DataError("walk quantity must be >= 0 and not NaN at every sample")
        return walk_levels(px, sz, qty)


def walk_levels(
    px: np.ndarray, sz: np.ndarray, quantity: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised walk of one side: (avg_price, filled_qty, worst_price, levels_used) per row.

    ``px``/``sz`` are ``(n, levels)`` from the touch outwards; a level with a NaN
    price or size holds nothing. Each level gives ``clip(q - size_before, 0, size)``.
    """
    available = np.where(np.isnan(px) | np.isnan(sz), 0.0, sz)
    cum = np.cumsum(available, axis=1)
    before = cum - available
    take = np.clip(quantity[:, None] - before, 0.0, available)
    filled = take.sum(axis=1)
    touched = take > 0
    notional = np.where(touched, take * np.nan_to_num(px), 0.0).sum(axis=1)
    used = touched.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = np.where(filled > 0, notional / np.where(filled > 0, filled, 1.0), np.nan)
    if px.shape[1]:
        last = px.shape[1] - 1 - np.argmax(touched[:, ::-1], axis=1)  # the deepest level touched
        worst = np.where(used > 0, np.take_along_axis(px, last[:, None], axis=1)[:, 0], np.nan)
    else:
        worst = np.full(len(quantity), np.nan)
    # One level touched: the VWAP is that level's price exactly (no p*q/q rounding),
    # so "filled at the touch" comparisons against quoted prices stay exact.
    avg = np.where(used == 1, worst, avg)
    return avg, filled, worst, used


# -- Binance spot L2 ------------------------------------------------------------------
_DEPTH_COLUMNS = ("ts_ns", "kind", "last_update_id", "first_update_id", "side", "price", "qty")


def rebuild_binance_book(depth: pd.DataFrame, sample_ts_ns: np.ndarray, levels: int = 50) -> BookSnapshots:
    """Rebuild Binance spot's L2 book from a snapshot and diffs; sample it at ``sample_ts_ns``.

    Follows Binance's documented spot procedure (the first snapshot in the frame is
    the base): diffs with ``last_update_id <= snapshot id`` are dropped; the first
    kept diff must bridge the snapshot (``first_update_id <= id + 1 <= last_update_id``)
    and each later diff must continue the previous one (``first_update_id`` =
    previous ``last_update_id`` + 1), else the book would be silently wrong and
    DataError is raised. ``qty`` is the level's new absolute quantity; 0 removes it.
    Diffs for levels the snapshot did not cover are kept as new levels. Later
    snapshot rows (a re-sync) are not used.

    The book exists from the snapshot's arrival: samples before it are all NaN. Diffs
    that arrived before the snapshot but are newer than it are applied at the
    snapshot's arrival time. A sample at ``t`` sees every message with ``ts_ns <= t``.
    """
    missing = [c for c in _DEPTH_COLUMNS if c not in depth.columns]
    if missing:
        raise DataError(f"depth frame lacks column(s) {missing}; expected the canonical depth columns "
                        f"{list(_DEPTH_COLUMNS)} (load it with tradebook.data.load_depth)")
    if levels < 1:
        raise DataError(f"levels is {levels}; expected at least 1")
    samples = as_ns_array(sample_ts_ns)
    ts = depth["ts_ns"].to_numpy(dtype=np.int64)
    if (np.diff(ts) < 0).any():
        raise DataError("depth ts_ns goes backwards; expected the frame in capture order (non-decreasing ts_ns)")
    kind = depth["kind"].to_numpy(dtype=object)
    last_id = depth["last_update_id"].to_numpy(dtype=np.int64)
    is_snapshot = kind == "snapshot"
    if not is_snapshot.any():
        raise DataError("depth frame has no 'snapshot' rows: a Binance book cannot be rebuilt from diffs alone")
    first_snap_row = int(np.flatnonzero(is_snapshot)[0])
    snapshot_id = int(last_id[first_snap_row])
    snap_rows = np.flatnonzero(is_snapshot & (last_id == snapshot_id))
    snapshot_ts = int(ts[snap_rows].max())

    is_diff = kind == "diff"
    first_id_all = depth["first_update_id"].to_numpy(dtype=np.float64, na_value=np.nan)
    live = is_diff & (last_id > snapshot_id)
    live_rows = np.flatnonzero(live)
    if len(live_rows) and np.isnan(first_id_all[live_rows]).any():
        raise DataError("a diff row has no first_update_id; expected Binance's U on every diff row")
    first_id = depth["first_update_id"].to_numpy(dtype=np.int64, na_value=-1)
    if len(live_rows):
        _check_diff_sequence(first_id[live_rows], last_id[live_rows], ts[live_rows], snapshot_id)

    rows = np.concatenate([snap_rows, live_rows])
    effective_ts = np.maximum(ts[rows], snapshot_ts)
    price = depth["price"].to_numpy(dtype=np.float64)[rows]
    qty = depth["qty"].to_numpy(dtype=np.float64)[rows]
    if not (np.isfinite(price).all() and (price > 0).all() and np.isfinite(qty).all() and (qty >= 0).all()):
        raise DataError("depth prices must be positive and finite, qty finite and >= 0")
    side_text = depth["side"].to_numpy(dtype=object)[rows]
    is_bid = side_text == "bid"
    if not (is_bid | (side_text == "ask")).all():
        raise DataError("depth side must be 'bid' or 'ask' on every row")
    unique_prices, price_index = np.unique(price, return_inverse=True)

    order = np.argsort(samples, kind="stable")
    applied = np.searchsorted(effective_ts, samples[order], side="right")
    n, shape = len(samples), (len(samples), levels)
    out = {name: np.full(shape, np.nan) for name in _BOOK_FIELDS}
    _replay_depth(is_bid, price_index.astype(np.int64), qty, applied.astype(np.int64), unique_prices, levels,
                  out["bid_px"], out["bid_sz"], out["ask_px"], out["ask_sz"])
    update_ids = np.where(applied > 0, last_id[rows][np.clip(applied - 1, 0, None)], -1)
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    return BookSnapshots(
        ts_ns=samples.copy(),
        update_id=update_ids[inverse],
        **{name: array[inverse] for name, array in out.items()},
    )


def _check_diff_sequence(first_id: np.ndarray, last_id: np.ndarray, ts: np.ndarray, snapshot_id: int) -> None:
    # One message spans several rows sharing its ids; check message to message.
    starts = np.flatnonzero(np.r_[True, (first_id[1:] != first_id[:-1]) | (last_id[1:] != last_id[:-1])])
    msg_first, msg_last = first_id[starts], last_id[starts]
    if not msg_first[0] <= snapshot_id + 1 <= msg_last[0]:
        raise DataError(
            f"the first diff after the snapshot (update ids {msg_first[0]}..{msg_last[0]}) does not bridge the "
            f"snapshot's lastUpdateId {snapshot_id}; expected first_update_id <= {snapshot_id + 1} <= "
            "last_update_id (a diff is missing: the rebuilt book would be wrong)")
    gaps = np.flatnonzero(msg_first[1:] != msg_last[:-1] + 1)
    if len(gaps):
        g = int(gaps[0]) + 1
        raise DataError(
            f"diff update-id sequence breaks at ts_ns {ts[starts[g]]}: first_update_id {msg_first[g]} follows "
            f"last_update_id {msg_last[g - 1]}; expected {msg_last[g - 1] + 1} (diffs were lost: re-snapshot)")


@numba.njit(cache=False, nogil=True)
def _replay_depth(is_bid, price_index, qty, applied, prices, levels,
                  bid_px, bid_sz, ask_px, ask_sz):  # pragma: no cover - compiled
    # The replay is inherently sequential (each message updates the state the next
    # one sees), hence a compiled loop. Dense per-price arrays make each update O(1);
    # the top levels are read by scanning from the touch side of the price grid.
    n_prices = len(prices)
    bids = np.zeros(n_prices)
    asks = np.zeros(n_prices)
    event = 0
    for s in range(len(applied)):
        while event < applied[s]:
            if is_bid[event]:
                bids[price_index[event]] = qty[event]
            else:
                asks[price_index[event]] = qty[event]
            event += 1
        if applied[s] == 0:
            continue
        k = 0
        i = n_prices - 1
        while i >= 0 and k < levels:
            if bids[i] > 0.0:
                bid_px[s, k] = prices[i]
                bid_sz[s, k] = bids[i]
                k += 1
            i -= 1
        k = 0
        i = 0
        while i < n_prices and k < levels:
            if asks[i] > 0.0:
                ask_px[s, k] = prices[i]
                ask_sz[s, k] = asks[i]
                k += 1
            i += 1


# -- CME top-N book rows ----------------------------------------------------------------
def book_levels(book: pd.DataFrame) -> int:
    """How many levels a top-N book frame carries (bid_px_0, bid_px_1, ... present in a row)."""
    n = 0
    while all(f"{name}_{n}" in book.columns for name in _BOOK_FIELDS):
        n += 1
    return n


def book5_snapshots(book: pd.DataFrame, sample_ts_ns: np.ndarray) -> BookSnapshots:
    """Sample a top-N book frame (``bid_px_0..``, as the ESH4 book5 file) as of each sample time.

    Each sample takes the last row with ``ts_ns <= t`` (rows sharing a timestamp:
    the last one, the state after that event); before the first row, all NaN.
    Nothing is dropped here. **Callers must exclude pre-open states**: the ESH4
    file's rows before 2023-12-25T23:00Z (:data:`ESH4_20231225_OPEN_NS`) are the
    pre-open auction, mostly crossed, which no marketable order could trade on;
    use :func:`exclude_crossed_or_preopen` on the result. Filtering by time alone is
    not enough: a sample in [23:00:00, 23:00:00.107) still sees the last (crossed)
    pre-open row, because the first post-open row arrives 107 ms after 23:00; the
    crossed check drops it.
    """
    levels = book_levels(book)
    if levels == 0 or "ts_ns" not in book.columns:
        raise DataError("book frame lacks ts_ns or level-0 columns; expected ts_ns, bid_px_0, bid_sz_0, ask_px_0, "
                        f"ask_sz_0 (and _1.. for deeper levels), found {list(book.columns)}")
    samples = as_ns_array(sample_ts_ns)
    ts = book["ts_ns"].to_numpy(dtype=np.int64)
    if (np.diff(ts) < 0).any():
        raise DataError("book ts_ns goes backwards; expected non-decreasing ts_ns")
    row = np.searchsorted(ts, samples, side="right") - 1
    present = row >= 0
    arrays = {}
    for name in _BOOK_FIELDS:
        table = np.column_stack([book[f"{name}_{i}"].to_numpy(dtype=np.float64, na_value=np.nan)
                                 for i in range(levels)])
        arrays[name] = np.where(present[:, None], table[np.clip(row, 0, None)], np.nan)
    return BookSnapshots(ts_ns=samples.copy(), **arrays)


def exclude_crossed_or_preopen(snapshots: BookSnapshots, open_ts_ns: int | None = None) -> BookSnapshots:
    """Keep only samples a marketable order could have traded on.

    Drops samples before ``open_ts_ns`` (e.g. :data:`ESH4_20231225_OPEN_NS`, the
    end of the ESH4 pre-open auction), and samples whose touch is missing on a side,
    crossed or locked. Returned as a new :class:`BookSnapshots`; count the drop with
    ``len(before) - len(after)`` if it matters.
    """
    keep = snapshots.two_sided
    if open_ts_ns is not None:
        keep &= snapshots.ts_ns >= int(open_ts_ns)
    return snapshots.select(keep)


def typical_top_size(snapshots: BookSnapshots) -> float:
    """Median touch size over both sides of the two-sided samples: the unit for relative order sizes."""
    ok = snapshots.two_sided
    sizes = np.concatenate([snapshots.bid_sz[ok, 0], snapshots.ask_sz[ok, 0]])
    sizes = sizes[np.isfinite(sizes)]
    if not len(sizes):
        raise DataError("no two-sided sample with touch sizes: cannot compute a typical top-of-book size")
    return float(np.median(sizes))
