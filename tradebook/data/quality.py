"""Quality findings: what a loader reports about data it loaded as it is (crossed or locked quotes,
off-tick or implausible prices, missing sizes, clock offsets, extended hours, bar grids, depth
layouts), one check per kind of data; and the checks that refuse a file outright (book levels out
of order, inconsistent bars). :mod:`tradebook.data.loaders` runs them after parsing and validating.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from tradebook.data.schemas import DataKind, KindSpec
from tradebook.errors import DataError
from tradebook.model.instruments import AssetClass, Instrument
from tradebook.model.time import NS_PER_DAY, ns_to_iso

Severity = Literal["info", "warning"]


@dataclass(frozen=True)
class QualityFinding:
    """Something worth knowing about data that was nevertheless loaded as it is."""

    severity: Severity
    code: str
    message: str
    count: int = 0
    first_line: int | None = None

    def __str__(self) -> str:
        return f"[{self.severity}] {self.code}: {self.message}"


def fail_at(message: str, source: str, index: int | None = None) -> DataError:
    return DataError(message, source=source, line=None if index is None else index + 2)


def first_index(mask: np.ndarray | pd.Series) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0])


def _rows_finding(level: str, code: str, mask: np.ndarray, what: str, line_offset: int = 2) -> QualityFinding:
    """A finding about the rows ``mask`` marks: their count (``"{count:,} {what}"``) and the first one's file line.

    ``line_offset``: the first marked row's index to its line in the file (the header is
    line 1, so row 0 is line 2; a check on row differences marks the row before).
    """
    count = int(np.asarray(mask).sum())
    return QualityFinding(level, code, f"{count:,} {what}", count=count, first_line=first_index(mask) + line_offset)


# -- findings ------------------------------------------------------------------------
def no_checks(frame, instrument, source, bar_ns) -> list[QualityFinding]:
    return []


def _tick_array(instrument: Instrument, prices: np.ndarray) -> np.ndarray:
    ticks = np.full(prices.shape, float(instrument.tick_size))
    for threshold, tick in instrument.tick_schedule:
        ticks = np.where(prices >= float(threshold), float(tick), ticks)
    return ticks


def _off_tick_count(instrument: Instrument, prices: np.ndarray) -> int:
    prices = prices[~np.isnan(prices)]
    steps = prices / _tick_array(instrument, prices)
    return int((np.abs(steps - np.round(steps)) > 1e-6).sum())


def _crossed_findings(bid: np.ndarray, ask: np.ndarray, ts: np.ndarray, what: str) -> list[QualityFinding]:
    findings = []
    crossed = bid > ask
    locked = bid == ask
    n = len(bid)
    if crossed.any():
        first = first_index(crossed)
        last = int(np.flatnonzero(crossed)[-1])
        findings.append(QualityFinding(
            "warning", "crossed_quotes",
            f"{int(crossed.sum()):,} of {n:,} {what} are crossed (bid > ask, {crossed.mean():.2%}), "
            f"from {ns_to_iso(ts[first])} to {ns_to_iso(ts[last])}; do not calibrate spreads on these rows",
            count=int(crossed.sum()), first_line=first + 2))
    if locked.any():
        first = first_index(locked)
        findings.append(QualityFinding(
            "warning" if locked.mean() > 0.01 else "info", "locked_quotes",
            f"{int(locked.sum()):,} of {n:,} {what} are locked (bid = ask, {locked.mean():.2%})",
            count=int(locked.sum()), first_line=first + 2))
    return findings


def _quote_checks(frame, instrument, source, bar_ns) -> list[QualityFinding]:
    bid, ask = frame["bid_px"].to_numpy(), frame["ask_px"].to_numpy()
    findings = _crossed_findings(bid, ask, frame["ts_ns"].to_numpy(), "quotes")
    for column in ("bid_sz", "ask_sz"):
        if column in frame.columns:
            sizes = frame[column].to_numpy(dtype="float64", na_value=np.nan)
            if np.isnan(sizes).all():
                findings.append(QualityFinding("info", "no_sizes", f"{column} is empty on every row: no sizes"))
            elif (sizes == 0).any():
                findings.append(_rows_finding("warning", "zero_size", sizes == 0, f"quotes with {column} = 0"))
    if "bid_sz" not in frame.columns and "ask_sz" not in frame.columns:
        findings.append(QualityFinding("info", "no_sizes", "the file has no bid/ask sizes"))
    return findings


def _book_checks(frame, instrument, source, bar_ns) -> list[QualityFinding]:
    findings = _crossed_findings(frame["bid_px_0"].to_numpy(), frame["ask_px_0"].to_numpy(),
                                 frame["ts_ns"].to_numpy(), "book rows (top level)")
    levels = sorted(int(c.rsplit("_", 1)[1]) for c in frame.columns if c.startswith("bid_px_"))
    for level in levels[1:]:
        for side, worse in (("bid", np.greater), ("ask", np.less)):
            inner = frame[f"{side}_px_{level - 1}"].to_numpy(dtype="float64", na_value=np.nan)
            outer = frame[f"{side}_px_{level}"].to_numpy(dtype="float64", na_value=np.nan)
            bad = ~np.isnan(outer) & ~np.isnan(inner) & ~worse(inner, outer)
            if bad.any():
                i = first_index(bad)
                raise fail_at(f"{side} level {level} price {outer[i]} is not behind level {level - 1} ({inner[i]}); "
                            "expected levels ordered from the touch outwards", source, i)
    return findings


def _mbp1_checks(frame, instrument, source, bar_ns) -> list[QualityFinding]:
    return _crossed_findings(frame["bid_px"].to_numpy(), frame["ask_px"].to_numpy(), frame["ts_ns"].to_numpy(),
                             "top-of-book states")


def _ohlc_check(frame: pd.DataFrame, prefix: str, source: str) -> None:
    o, h, l, c = (frame[f"{prefix}{name}"].to_numpy() for name in ("open", "high", "low", "close"))
    bad = (h < np.maximum(o, c)) | (l > np.minimum(o, c)) | (l > h)
    if bad.any():
        i = first_index(bad)
        raise fail_at(f"inconsistent {prefix or 'trade '}bar: open {o[i]}, high {h[i]}, low {l[i]}, close {c[i]}; "
                    "expected low <= open, close <= high", source, i)


def _trade_bar_checks(frame, instrument, source, bar_ns) -> list[QualityFinding]:
    _ohlc_check(frame, "", source)
    findings = _bar_grid_findings(frame, bar_ns)
    if bar_ns is not None and bar_ns >= NS_PER_DAY and len(frame) > 1:
        o, h, l, c = (frame[n].to_numpy() for n in ("open", "high", "low", "close"))
        ratio = o[1:] / c[:-1]
        gaps = np.flatnonzero((ratio > 1.25) | (ratio < 0.75)) + 1
        if len(gaps):
            listed = ", ".join(f"{ns_to_iso(frame['ts_ns'].iloc[i])[:10]} x{ratio[i - 1]:.3f}" for i in gaps[:8])
            findings.append(QualityFinding(
                "warning", "overnight_gap",
                f"{len(gaps)} overnight open/previous-close ratios beyond +/-25% (splits in raw prices, bad prints "
                f"or real moves; adjust with the factor file): {listed}", count=len(gaps), first_line=int(gaps[0]) + 2))
        body_hi, body_lo = np.maximum(o, c), np.minimum(o, c)
        spikes = np.flatnonzero((h > body_hi * 1.12) | (l < body_lo / 1.12))
        if len(spikes):
            listed = ", ".join(ns_to_iso(frame["ts_ns"].iloc[i])[:10] for i in spikes[:8])
            findings.append(QualityFinding(
                "warning", "high_low_spike",
                f"{len(spikes)} bars with a high or low more than 12% outside the open-close range (some real, many "
                f"bad prints; filter before range-based volatility): {listed}{' ...' if len(spikes) > 8 else ''}",
                count=len(spikes), first_line=int(spikes[0]) + 2))
    return findings


def _quote_bar_checks(frame, instrument, source, bar_ns) -> list[QualityFinding]:
    _ohlc_check(frame, "bid_", source)
    _ohlc_check(frame, "ask_", source)
    findings = _crossed_findings(frame["bid_close"].to_numpy(), frame["ask_close"].to_numpy(),
                                 frame["ts_ns"].to_numpy(), "bar closes")
    return findings + _bar_grid_findings(frame, bar_ns)


def _bar_grid_findings(frame: pd.DataFrame, bar_ns: int | None) -> list[QualityFinding]:
    if bar_ns is None or bar_ns >= NS_PER_DAY:
        return []
    ts = frame["ts_ns"].to_numpy()
    off_grid = ts % bar_ns != 0
    findings = []
    if off_grid.any():
        findings.append(_rows_finding("warning", "off_grid_bars", off_grid,
                                      f"bar starts are not on the {bar_ns // 1_000_000_000}s grid"))
    repeated = np.diff(ts) == 0
    if repeated.any():
        findings.append(_rows_finding("warning", "repeated_bars", repeated,
                                      "bars share a start time with the previous bar", line_offset=3))
    return findings


def _trade_checks(frame, instrument, source, bar_ns) -> list[QualityFinding]:
    findings = []
    size = frame["size"].to_numpy()
    if (size == 0).any():
        findings.append(_rows_finding("warning", "zero_size", size == 0, "trades of size 0"))
    if "aggressor_side" in frame.columns:
        none = (frame["aggressor_side"] == "NONE").to_numpy(dtype=bool, na_value=False)
        if none.any():
            findings.append(_rows_finding("info", "no_aggressor", none,
                                          "trades carry no aggressor side (auction prints)"))
    else:
        findings.append(QualityFinding("info", "no_aggressor", "no aggressor side: infer it from the prevailing "
                                       "quote when needed"))
    if "suspicious" in frame.columns:
        flagged = frame["suspicious"].to_numpy(dtype=bool, na_value=False)
        if flagged.any():
            findings.append(_rows_finding("warning", "suspicious_trades", flagged,
                                          "trades flagged suspicious by the vendor"))
    return findings


def _depth_checks(frame, instrument, source, bar_ns) -> list[QualityFinding]:
    findings = []
    snapshot = (frame["kind"] == "snapshot").to_numpy(dtype=bool)
    if not snapshot.any():
        findings.append(QualityFinding("warning", "no_snapshot", "no snapshot rows: the book cannot be rebuilt "
                                       "from diffs alone"))
        return findings
    snap_ids = frame.loc[snapshot, "last_update_id"].unique()
    first_snap = first_index(snapshot)
    snapshot_id = int(frame["last_update_id"].iloc[first_snap])
    diffs = frame.loc[~snapshot, ["first_update_id", "last_update_id"]].drop_duplicates()
    if diffs["first_update_id"].isna().any():
        i = first_index(~snapshot & frame["first_update_id"].isna().to_numpy())
        raise fail_at("first_update_id is empty on a diff row; expected an integer", source, i)
    stale = diffs["last_update_id"] <= snapshot_id
    live = diffs[~stale]
    if len(live):
        first_u, last_u = int(live["first_update_id"].iloc[0]), int(live["last_update_id"].iloc[0])
        bridged = first_u <= snapshot_id + 1 <= last_u
        breaks = int((live["first_update_id"].to_numpy()[1:] != live["last_update_id"].to_numpy()[:-1] + 1).sum())
        if not bridged:
            findings.append(QualityFinding("warning", "depth_not_bridged", f"no diff bridges the snapshot "
                                           f"(lastUpdateId {snapshot_id}); the rebuilt book may be wrong"))
        if breaks:
            findings.append(QualityFinding("warning", "depth_sequence_break", f"{breaks} breaks in the diff "
                                           "update-id sequence after the snapshot", count=breaks))
    findings.append(QualityFinding(
        "info", "depth_layout",
        f"{len(snap_ids)} snapshot(s) ({int(snapshot.sum()):,} rows), {len(diffs):,} diff messages; "
        f"{int(stale.sum()):,} diff messages precede the snapshot id {snapshot_id} and are dropped when rebuilding",
        count=int(stale.sum())))
    return findings


KIND_CHECKS = {
    DataKind.QUOTES: _quote_checks,
    DataKind.TRADES: _trade_checks,
    DataKind.TRADE_BARS: _trade_bar_checks,
    DataKind.QUOTE_BARS: _quote_bar_checks,
    DataKind.DEPTH: _depth_checks,
    DataKind.BOOK: _book_checks,
    DataKind.MBP1: _mbp1_checks,
}


# Beyond these a value is a unit error or a corrupt print, not a market: no instrument trades above a
# trillion per unit, and the order path's DECIMAL(38, 12) holds 12 decimals (so a price below 1e-12 is 0).
PLAUSIBLE_PRICE = (1e-12, 1e12)
PLAUSIBLE_SIZE = 1e15


def _implausible_findings(frame: pd.DataFrame, spec: KindSpec) -> list[QualityFinding]:
    findings = []
    low, high = PLAUSIBLE_PRICE
    for what, columns, bad_of in (
            ("prices", spec.prices, lambda v: (v > high) | ((v > 0) & (v < low))),
            ("sizes", spec.sizes, lambda v: v > PLAUSIBLE_SIZE)):
        count, first_line, example = 0, None, None
        for column in columns:
            if column not in frame.columns:
                continue
            values = frame[column].to_numpy(dtype="float64", na_value=np.nan)
            bad = bad_of(values)
            if bad.any():
                count += int(bad.sum())
                i = first_index(bad)
                if first_line is None or i + 2 < first_line:
                    first_line, example = i + 2, f"{column} {values[i]:g} on line {i + 2}"
        if count:
            limit = f"outside {low:g}..{high:g}" if what == "prices" else f"above {PLAUSIBLE_SIZE:g}"
            findings.append(QualityFinding(
                "warning", f"implausible_{what}",
                f"{count:,} {what} {limit} (first: {example}): a unit error or a corrupt print; orders cannot be "
                "placed at such values (the order path holds DECIMAL(38, 12))", count=count, first_line=first_line))
    return findings


def common_findings(frame: pd.DataFrame, instrument: Instrument, spec: KindSpec) -> list[QualityFinding]:
    findings = _implausible_findings(frame, spec) if spec.kind is not DataKind.ADJUSTMENT_FACTORS else []
    ts = frame["ts_ns"].to_numpy()
    repeated = int((np.diff(ts) == 0).sum())
    if repeated and spec.kind not in (DataKind.DEPTH, DataKind.TRADE_BARS, DataKind.QUOTE_BARS):
        findings.append(QualityFinding("info", "repeated_timestamps",
                                       f"{repeated:,} rows share their timestamp with the previous row "
                                       "(file order kept)", count=repeated))
    off_tick = sum(_off_tick_count(instrument, frame[c].to_numpy(dtype="float64", na_value=np.nan))
                   for c in spec.prices if c in frame.columns)
    if off_tick and spec.kind is not DataKind.ADJUSTMENT_FACTORS:
        findings.append(QualityFinding("warning", "off_tick_prices",
                                       f"{off_tick:,} prices are not on {instrument.instrument_id}'s tick grid "
                                       f"(tick {instrument.tick_size}): pre-2001 fractional prices, sub-penny or "
                                       "averaged prints; orders are still conformed to the grid", count=off_tick))
    if "ts_event_ns" in frame.columns:
        event = frame["ts_event_ns"].to_numpy(dtype="float64", na_value=np.nan)
        ok = ~np.isnan(event)
        if ok.any():
            offset_ms = float(np.median(ts[ok] - event[ok])) / 1e6
            severity: Severity = "warning" if abs(offset_ms) > 1000 else "info"
            findings.append(QualityFinding(severity, "clock_offset",
                                           f"median ts_ns - ts_event_ns = {offset_ms:,.3f} ms"
                                           + (" (capture clock is not the exchange clock: use ts_ns for order, "
                                              "not for latency)" if severity == "warning" else "")))
    if instrument.asset_class is AssetClass.EQUITY and len(ts) and spec.kind is not DataKind.ADJUSTMENT_FACTORS \
            and not (spec.kind is DataKind.TRADE_BARS and len(ts) > 1 and np.median(np.diff(ts)) >= NS_PER_DAY):
        local = pd.DatetimeIndex(ts.astype("datetime64[ns]"), tz="UTC").tz_convert(instrument.trading_hours.timezone)
        minutes = local.hour * 60 + local.minute
        hours = instrument.trading_hours
        regular = (minutes >= hours.open.hour * 60 + hours.open.minute) & (
            minutes < hours.close.hour * 60 + hours.close.minute)
        outside = int((~regular).sum())
        if outside:
            findings.append(QualityFinding("info", "extended_hours",
                                           f"{outside:,} rows ({outside / len(ts):.1%}) fall outside regular hours "
                                           f"{hours.open:%H:%M}-{hours.close:%H:%M} {hours.timezone}; spreads there "
                                           "are much wider: filter to regular hours for calibration", count=outside))
    return findings
