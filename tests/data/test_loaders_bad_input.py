"""Bad input: each small CSV gets a clear DataError naming file, line and expectation, or a quality finding.

Line numbers are 1-based file lines: the header is line 1, the first data row line 2.
Every rejection is attempted as ``store.ingest(load(...))`` against a store that already
holds data, and the store must be unchanged afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import pytest

from tradebook.data import DataKind, load, load_bars, load_quotes
from tradebook.errors import DataError, SchemaError, TradebookError, UnknownInstrumentError

HEADER = ["ts_ns", "ts_iso", "symbol", "bid_px", "bid_sz", "ask_px", "ask_sz"]
GOOD_ROWS = [  # the first three rows of the 2024 Binance L1 file, at file lines 2, 3, 4
    ["1723161254087891268", "2024-08-08T23:54:14.087891268Z", "BTCUSDT", "61837.63", "3.78826", "61837.64",
     "1.54698"],
    ["1723161254116723068", "2024-08-08T23:54:14.116723068Z", "BTCUSDT", "61837.63", "3.78826", "61837.64",
     "1.6052"],
    ["1723161254200000000", "2024-08-08T23:54:14.2Z", "BTCUSDT", "61837.62", "1.0", "61837.63", "2.0"],
]
GOOD_TS = [1723161254087891268, 1723161254116723068, 1723161254200000000]
BTC = "BTCUSDT.BINANCE"


def edit(row: list[str], **cells: str) -> list[str]:
    out = list(row)
    for column, value in cells.items():
        out[HEADER.index(column)] = value
    return out


def drop(row: list[str], column: str) -> list[str]:
    return [v for c, v in zip(HEADER, row) if c != column]


def csv(header: list[str], *rows: list[str]) -> str:
    return "\n".join(",".join(r) for r in (header, *rows)) + "\n"


def quotes(*rows: list[str]) -> str:
    return csv(HEADER, *rows)


R1, R2, R3 = GOOD_ROWS
BARS_HEADER = ["ts_ns", "open", "high", "low", "close", "volume"]
BAR1 = ["1380873960000000000", "10.00", "11.00", "9.00", "10.50", "100"]
BAR2 = ["1380874020000000000", "10.50", "10.75", "10.25", "10.50", "200"]
QBAR_HEADER = ["ts_ns", "bid_open", "bid_high", "bid_low", "bid_close", "last_bid_size", "ask_open", "ask_high",
               "ask_low", "ask_close", "last_ask_size"]
QBAR1 = ["1380873600000000000", "10", "10", "10", "10", "100", "11", "11", "11", "11", "100"]


@dataclass(frozen=True)
class Rejection:
    id: str
    text: str
    error: type[DataError]
    line: int | None
    fragments: tuple[str, ...]
    kind: str = "quotes"
    instrument: str = BTC
    kw: dict = field(default_factory=dict)
    gz: bool = False

    @property
    def file_name(self) -> str:
        return f"{self.id}.csv" + (".gz" if self.gz else "")


REJECTIONS = [
    Rejection("too_many_fields", quotes(R1, R2 + ["9"], R3), DataError, 3,
              ("8 fields, expected 7 (one per header column)",)),
    Rejection("too_many_fields_gz", quotes(R1, R2, R3 + ["9"]), DataError, 4,
              ("8 fields, expected 7",), gz=True),
    # on the first row pandas would take the extra field for an index and shift every column
    Rejection("too_many_fields_first_row", quotes(R1 + ["9"], R2, R3), DataError, 2, ("8 fields, expected 7",)),
    Rejection("too_few_fields", quotes(R1, R2[:-1], R3), DataError, 3, ("6 fields, expected 7",)),
    Rejection("too_many_fields_quoted", quotes(R1, R2 + ['"a,b"'], R3), DataError, 3, ("8 fields, expected 7",)),
    Rejection("missing_column",
              csv(drop(HEADER, "ask_px"), drop(R1, "ask_px"), drop(R2, "ask_px")), SchemaError, 1,
              ("missing required column", "'ask_px'", "expected at least ['ts_ns', 'bid_px', 'ask_px']")),
    Rejection("duplicated_column", csv(HEADER + ["bid_px"], R1 + ["61837.63"]), SchemaError, 1,
              ("duplicated columns", "bid_px")),
    Rejection("wrong_type_price", quotes(R1, R2, edit(R3, bid_px="abc")), SchemaError, 4,
              ("column 'bid_px' holds 'abc'", "expected a number")),
    Rejection("wrong_type_price_gz", quotes(R1, R2, edit(R3, ask_px="61837.6x")), SchemaError, 4,
              ("column 'ask_px' holds '61837.6x'", "expected a number"), gz=True),
    Rejection("wrong_type_first_row", quotes(edit(R1, ask_sz="lots"), R2), SchemaError, 2,
              ("column 'ask_sz' holds 'lots'", "expected a number")),
    Rejection("wrong_type_ts_ns", quotes(R1, edit(R2, ts_ns="soon"), R3), SchemaError, 3,
              ("column 'ts_ns' holds 'soon'", "expected an integer")),
    Rejection("empty_required_price", quotes(R1, edit(R2, bid_px=""), R3), DataError, 3,
              ("bid_px is empty", "expected a number")),
    Rejection("empty_ts_ns", quotes(R1, edit(R2, ts_ns=""), R3), SchemaError, 3,
              ("'ts_ns' holds an empty value", "expected an integer")),
    Rejection("naive_iso", csv(["ts_iso", "bid_px", "ask_px"], ["2024-01-02T10:00:00", "1.10000", "1.10002"]),
              DataError, 2, ("naive", "'2024-01-02T10:00:00'", "expected a UTC offset or 'Z'"),
              instrument="EURUSD.DUKASCOPY"),
    Rejection("naive_iso_second_row",
              csv(["ts_iso", "bid_px", "ask_px"], ["2024-01-02T10:00:00Z", "1.10000", "1.10002"],
                  ["2024-01-02T10:00:01", "1.10000", "1.10002"]),
              DataError, 3, ("naive",), instrument="EURUSD.DUKASCOPY"),
    Rejection("empty_iso", csv(["ts_iso", "bid_px", "ask_px"], ["2024-01-02T10:00:00Z", "1.1", "1.2"],
                               ["", "1.1", "1.2"]),
              DataError, 3, ("ts_iso is empty", "ISO-8601"), instrument="EURUSD.DUKASCOPY"),
    Rejection("unparseable_iso", csv(["ts_iso", "bid_px", "ask_px"], ["2024-01-02T10:00:00Z", "1.1", "1.2"],
                                     ["2024-13-45T00:00:00Z", "1.1", "1.2"]),
              DataError, 3, ("'2024-13-45T00:00:00Z'", "not an ISO-8601 instant"), instrument="EURUSD.DUKASCOPY"),
    Rejection("ts_ns_and_iso_disagree_by_1ns",
              quotes(R1, edit(R2, ts_iso="2024-08-08T23:54:14.116723069Z"), R3), DataError, 3,
              ("ts_ns 1723161254116723068", "'2024-08-08T23:54:14.116723069Z'", "disagree",
               "expected the same instant")),
    Rejection("non_monotonic", quotes(R1, R3, R2), DataError, 4,
              ("time goes backwards", "1723161254116723068", "follows 1723161254200000000",
               "expected non-decreasing ts_ns")),
    Rejection("non_monotonic_gz", quotes(R2, R1, R3), DataError, 3,
              ("time goes backwards", "expected non-decreasing ts_ns"), gz=True),
    Rejection("ts_ns_negative", csv(drop(HEADER, "ts_iso"), drop(edit(R1, ts_ns="-5"), "ts_iso")), DataError, 2,
              ("ts_ns -5", "outside 1970..2100")),
    Rejection("negative_size", quotes(R1, edit(R2, bid_sz="-1"), R3), DataError, 3,
              ("bid_sz is -1.0", "expected a finite size >= 0")),
    Rejection("zero_price", quotes(R1, edit(R2, bid_px="0"), R3), DataError, 3,
              ("bid_px is 0.0", "expected a positive finite price")),
    Rejection("negative_price", quotes(R1, R2, edit(R3, ask_px="-61837.63")), DataError, 4,
              ("ask_px is -61837.63", "expected a positive finite price")),
    Rejection("infinite_price", quotes(R1, edit(R2, ask_px="inf"), R3), DataError, 3,
              ("ask_px", "expected a finite number")),
    Rejection("wrong_symbol", quotes(R1, edit(R2, symbol="ETHUSDT"), R3), DataError, 3,
              ("symbol 'ETHUSDT'", "does not match instrument BTCUSDT.BINANCE")),
    Rejection("wrong_instrument_for_file", quotes(R1, R2), DataError, 2,
              ("symbol 'BTCUSDT'", "EURUSD.DUKASCOPY"), instrument="EURUSD.DUKASCOPY"),
    Rejection("empty_file", "", DataError, 1, ("empty file", "expected a header row")),
    Rejection("empty_file_gz", "", DataError, 1, ("empty file", "expected a header row"), gz=True),
    Rejection("header_only", quotes(), DataError, None, ("no data rows", "expected at least one row of quotes")),
    Rejection("header_only_gz", quotes(), DataError, None, ("no data rows",), gz=True),
    Rejection("bars_without_bar_seconds", csv(BARS_HEADER, BAR1, BAR2), DataError, None,
              ("trade_bars need bar_seconds > 0",), kind="trade_bars", instrument="SPY.ARCX"),
    Rejection("bars_with_zero_bar_seconds", csv(BARS_HEADER, BAR1, BAR2), DataError, None,
              ("bar_seconds > 0",), kind="trade_bars", instrument="SPY.ARCX", kw={"bar_seconds": 0}),
    Rejection("bar_high_below_close", csv(BARS_HEADER, BAR1, ["1380874020000000000", "10", "10.40", "9", "10.5",
                                                               "1"]),
              DataError, 3, ("inconsistent trade bar", "high 10.4", "expected low <= open, close <= high"),
              kind="trade_bars", instrument="SPY.ARCX", kw={"bar_seconds": 60}),
    Rejection("bar_low_above_open", csv(BARS_HEADER, ["1380873960000000000", "10", "11", "10.25", "10.5", "1"]),
              DataError, 2, ("inconsistent trade bar", "low 10.25"),
              kind="trade_bars", instrument="SPY.ARCX", kw={"bar_seconds": 60}),
    Rejection("quote_bar_inconsistent",
              csv(QBAR_HEADER, QBAR1, ["1380873660000000000", "10", "10", "9", "10.5", "1", "11", "11", "11",
                                       "11", "1"]),
              DataError, 3, ("inconsistent bid_", "expected low <= open, close <= high"),
              kind="quote_bars", instrument="SPY.ARCX", kw={"bar_seconds": 60}),
    Rejection("trade_bad_aggressor", csv(["ts_ns", "price", "size", "aggressor_side"],
                                         ["1704189600000000000", "1.10000", "1000", "BUYER"]),
              DataError, 2, ("aggressor_side is 'BUYER'", "expected one of ['BUY', 'NONE', 'SELL']"),
              kind="trades", instrument="EURUSD.DUKASCOPY"),
    Rejection("trade_aggressor_contradicts_maker_flag",
              csv(["ts_ns", "price", "size", "aggressor_side", "buyer_is_maker"],
                  ["1704189600000000000", "61837.63", "0.1", "SELL", "1"],
                  ["1704189600000000000", "61837.63", "0.1", "BUY", "1"]),
              DataError, 3, ("contradicts buyer_is_maker", "expected SELL"), kind="trades"),
    Rejection("book_levels_out_of_order",
              csv(["ts_ns", "bid_px_0", "bid_sz_0", "ask_px_0", "ask_sz_0", "bid_px_1", "bid_sz_1", "ask_px_1",
                   "ask_sz_1"],
                  ["1703545200000000000", "4750", "1", "4750.25", "1", "4749.75", "2", "4750.5", "2"],
                  ["1703545200000000001", "4750", "1", "4750.25", "1", "4750.25", "2", "4750.5", "2"]),
              DataError, 3, ("bid level 1 price 4750.25 is not behind level 0",), kind="book",
              instrument="ESH4.GLBX"),
    Rejection("depth_bad_side",
              csv(["ts_ns", "kind", "first_update_id", "last_update_id", "side", "price", "qty"],
                  ["1723161253937085768", "snapshot", "", "50093239202", "bid", "61837.63", "1.5"],
                  ["1723161253937085768", "snapshot", "", "50093239202", "buy", "61837.62", "1.5"]),
              DataError, 3, ("side is 'buy'", "expected one of ['ask', 'bid']"), kind="depth"),
    Rejection("factor_zero", csv(["ts_ns", "price_factor", "split_factor", "reference_price"],
                                 ["883717200000000000", "0.65", "1", "97.36"],
                                 ["883803600000000000", "0", "1", "97.36"]),
              DataError, 3, ("price_factor is 0.0", "expected a positive factor"), kind="adjustment_factors",
              instrument="SPY.ARCX"),
]


@pytest.mark.parametrize("case", REJECTIONS, ids=[c.id for c in REJECTIONS])
def test_rejected_with_file_line_and_expectation(case, seeded_store, snapshot, write_csv):
    path = write_csv(case.file_name, case.text)
    before = snapshot(seeded_store)
    with pytest.raises(case.error) as info:
        seeded_store.ingest(load(path, case.kind, case.instrument, **case.kw))
    error, message = info.value, str(info.value)
    assert isinstance(error, TradebookError)
    assert error.source == path.name
    assert error.line == case.line
    prefix = f"{path.name}, line {case.line}: " if case.line is not None else f"{path.name}: "
    assert message.startswith(prefix), message
    for fragment in case.fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert snapshot(seeded_store) == before


# -- failures that happen before a file is read ---------------------------------------------
def test_unknown_instrument(seeded_store, snapshot, write_csv):
    path = write_csv("ok.csv", quotes(R1, R2, R3))
    before = snapshot(seeded_store)
    with pytest.raises(UnknownInstrumentError) as info:
        seeded_store.ingest(load(path, "quotes", "BTCUSDT.BINANC"))
    assert "'BTCUSDT.BINANC'" in str(info.value) and "did you mean BTCUSDT.BINANCE" in str(info.value)
    assert snapshot(seeded_store) == before


@pytest.mark.parametrize("kind", ["qoutes", "quote", "", "L1"])
def test_unknown_kind(kind, seeded_store, snapshot, write_csv):
    path = write_csv("ok.csv", quotes(R1, R2, R3))
    before = snapshot(seeded_store)
    with pytest.raises(DataError) as info:
        seeded_store.ingest(load(path, kind, BTC))
    assert f"unknown data kind {kind!r}" in str(info.value)
    assert "quotes, trades" in str(info.value)  # lists what is expected
    assert snapshot(seeded_store) == before


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as info:
        load(tmp_path / "nowhere.csv.gz", "quotes", BTC)
    assert str(info.value).startswith("nowhere.csv.gz: no such file")


def test_a_good_file_of_each_problem_loads(write_csv):
    """Control for the table above: the unedited rows load, with exact values."""
    md = load_quotes(write_csv("ok.csv", quotes(R1, R2, R3)), BTC)
    assert md.frame["ts_ns"].tolist() == GOOD_TS
    assert md.frame["bid_px"].tolist() == [61837.63, 61837.63, 61837.62]
    assert md.findings == ()
    bars = load_bars(write_csv("bars.csv", csv(BARS_HEADER, BAR1, BAR2)), "SPY.ARCX", bar_seconds=60)
    assert bars.rows == 2 and bars.bar_ns == 60_000_000_000


# -- dirty but usable: loads, with findings ---------------------------------------------------
def _codes(md) -> dict[str, object]:
    return {f.code: f for f in md.findings}


def test_crossed_quotes_load_with_a_warning(write_csv, store):
    md = load_quotes(write_csv("crossed.csv", quotes(R1, edit(R2, bid_px="61837.65"), R3)), BTC)
    assert md.rows == 3
    crossed = _codes(md)["crossed_quotes"]
    assert (crossed.severity, crossed.count, crossed.first_line) == ("warning", 1, 3)
    assert md.frame["bid_px"].tolist() == [61837.63, 61837.65, 61837.62]  # reported, never cleaned
    result = store.ingest(md)
    stored = store.findings(result.dataset_id)
    assert stored.loc[stored["code"] == "crossed_quotes", "count"].tolist() == [1]
    pd.testing.assert_frame_equal(store.read("quotes", BTC, dataset_id=result.dataset_id), md.frame,
                                  check_exact=True)


def test_locked_quotes_load_with_a_finding(write_csv):
    md = load_quotes(write_csv("locked.csv", quotes(R1, R2, edit(R3, ask_px="61837.62"))), BTC)
    locked = _codes(md)["locked_quotes"]
    assert (locked.count, locked.first_line) == (1, 4)
    assert "crossed_quotes" not in _codes(md)


def test_iso_with_z_and_offsets_without_ts_ns(write_csv):
    text = csv(["ts_iso", "bid_px", "ask_px"],
               ["2024-01-02T10:00:00.123456789Z", "1.10000", "1.10002"],
               ["2024-01-02T11:00:00.5+01:00", "1.10001", "1.10003"],
               ["2024-01-02T05:00:01-05:00", "1.10001", "1.10003"])
    md = load_quotes(write_csv("iso.csv", text), "EURUSD.DUKASCOPY")
    assert md.frame["ts_ns"].dtype == "int64"
    assert md.frame["ts_ns"].tolist() == [1704189600123456789, 1704189600500000000, 1704189601000000000]
    assert list(md.frame.columns) == ["ts_ns", "bid_px", "ask_px"]


def test_iso_matching_ts_ns_at_ms_precision_loads(write_csv):
    md = load_quotes(write_csv("ms.csv", quotes(R3)), BTC)  # ts_iso written as ...14.2Z
    assert md.frame["ts_ns"].tolist() == [GOOD_TS[2]]


def test_crlf_and_gzip_load_the_same_frame(write_csv):
    plain = load_quotes(write_csv("lf.csv", quotes(R1, R2, R3)), BTC)
    crlf = load_quotes(write_csv("crlf.csv", quotes(R1, R2, R3).replace("\n", "\r\n")), BTC)
    gz = load_quotes(write_csv("lf.csv.gz", quotes(R1, R2, R3)), BTC)
    pd.testing.assert_frame_equal(crlf.frame, plain.frame, check_exact=True)
    pd.testing.assert_frame_equal(gz.frame, plain.frame, check_exact=True)


def test_unknown_columns_are_reported_not_silently_dropped(write_csv):
    md = load_quotes(write_csv("extra.csv", csv(HEADER + ["venue_note"], R1 + ["x"])), BTC)
    assert "venue_note" in _codes(md)["ignored_columns"].message
    assert "venue_note" not in md.frame.columns


def test_zero_size_trade_is_a_warning(write_csv):
    md = load(write_csv("t.csv", csv(["ts_ns", "price", "size"], ["1704189600000000000", "61837.63", "0"],
                                     ["1704189600000000001", "61837.63", "0.5"])), DataKind.TRADES, BTC)
    zero = _codes(md)["zero_size"]
    assert (zero.severity, zero.count, zero.first_line) == ("warning", 1, 2)


# -- regressions: bugs found by this suite and fixed in the package ------------------------
@pytest.mark.parametrize(
    ("text", "kind", "line"),
    [
        (quotes(R1, edit(R2, bid_px="nan"), R3), "quotes", 3),
        (quotes(R1, R2, edit(R3, ask_px="NaN")), "quotes", 4),
        (csv(["ts_ns", "price", "size"], ["1723161254087891268", "nan", "0.1"]), "trades", 2),
        (csv(["ts_ns", "price", "size"], ["1723161254087891268", "61837.63", "nan"]), "trades", 2),
    ],
    ids=["quote_bid_px", "quote_ask_px", "trade_price", "trade_size"],
)
def test_nan_text_in_price_or_size_is_a_data_error(text, kind, line, write_csv):
    path = write_csv("nan.csv", text)
    with pytest.raises(DataError) as info:
        load(path, kind, BTC)
    assert info.value.line == line
    assert str(info.value).startswith(f"nan.csv, line {line}: ")


@pytest.mark.parametrize("cell", ["1723161254116723068.0", "1723161254116723068.5", "1.7231612541167231e18"])
def test_non_integer_ts_ns_is_refused_not_rounded(cell, write_csv):
    path = write_csv("ts.csv", csv(drop(HEADER, "ts_iso"), drop(R1, "ts_iso"), drop(edit(R2, ts_ns=cell), "ts_iso"),
                                   drop(R3, "ts_iso")))
    try:
        md = load_quotes(path, BTC)
    except SchemaError as error:
        assert error.line == 3 and "expected an integer" in str(error)
    else:
        assert md.frame["ts_ns"].tolist() == GOOD_TS


def test_line_numbers_count_blank_lines(write_csv):
    lines = [HEADER, R1, [], R2, edit(R3, bid_px="abc")]  # line 3 is blank, a bad cell on line 5
    text = "\n".join(",".join(line) for line in lines) + "\n"
    with pytest.raises(SchemaError) as info:
        load_quotes(write_csv("blank.csv", text), BTC)
    # a blank line inside the data is itself malformed, and reported at its real line
    assert info.value.line == 3 and "empty value" in str(info.value)


def test_trailing_blank_lines_are_tolerated(write_csv):
    text = "\n".join(",".join(line) for line in [HEADER, R1, R2, R3]) + "\n\n\n"
    assert load_quotes(write_csv("trailing.csv", text), BTC).rows == 3


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (csv(drop(HEADER, "ts_iso"), drop(R1, "ts_iso"), drop(edit(R2, ts_ns="99999999999999999999"), "ts_iso")),
         "quotes"),
        (csv(["ts_ns", "price", "size", "trade_id"], ["1723161254087891268", "61837.63", "0.1", "1"],
             ["1723161254087891269", "61837.63", "0.1", "99999999999999999999999"]), "trades"),
    ],
    ids=["ts_ns", "trade_id"],
)
def test_integer_overflow_is_a_schema_error(text, kind, write_csv):
    with pytest.raises(SchemaError) as info:
        load(write_csv("big.csv", text), kind, BTC)
    assert info.value.line == 3


def test_utf8_byte_order_mark_is_accepted(write_csv):
    text = "\ufeff" + "\n".join(",".join(line) for line in [HEADER, R1, R2, R3]) + "\n"
    assert load_quotes(write_csv("bom.csv", text), BTC).rows == 3


# -- raw errors that used to escape: each one clear DataError, the store unchanged -------------------
def _refused(path, seeded_store, snapshot, line: int | None, *fragments: str) -> None:
    before = snapshot(seeded_store)
    with pytest.raises(DataError) as info:
        seeded_store.ingest(load(path, "quotes", BTC))
    message = str(info.value)
    assert message.startswith(f"{path.name}, line {line}: " if line else f"{path.name}: "), message
    assert info.value.line == line and "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert snapshot(seeded_store) == before


def test_truncated_gzip_names_the_last_whole_line(tmp_path, seeded_store, snapshot):
    import gzip

    text = quotes(R1, R2, R3) * 1  # 4 lines
    whole = gzip.compress(text.encode() * 200)  # a stream long enough to cut inside
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(whole[: len(whole) - 9])  # the end-of-stream marker and a little data are missing
    before = snapshot(seeded_store)
    with pytest.raises(DataError, match="the gzip file is truncated: it ends after line") as info:
        seeded_store.ingest(load(path, "quotes", BTC))
    assert info.value.line is not None and info.value.line > 1
    assert snapshot(seeded_store) == before
    path.write_bytes(whole[:20])  # cut inside the first line
    _refused(path, seeded_store, snapshot, 1, "truncated", "after line 0")


def test_corrupt_and_misnamed_gzip(tmp_path, seeded_store, snapshot):
    import gzip

    data = bytearray(gzip.compress(quotes(R1, R2, R3).encode()))
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "corrupt.csv.gz"
    path.write_bytes(bytes(data))
    before = snapshot(seeded_store)
    with pytest.raises(DataError, match="gzip"):
        seeded_store.ingest(load(path, "quotes", BTC))
    assert snapshot(seeded_store) == before
    plain = tmp_path / "plain.csv.gz"
    plain.write_text(quotes(R1, R2))
    _refused(plain, seeded_store, snapshot, None, "named .gz but is not gzip-compressed")


def test_concatenated_gzip_members_load_whole(tmp_path):
    import gzip

    path = tmp_path / "two.csv.gz"
    path.write_bytes(gzip.compress(quotes(R1).encode()) + gzip.compress((",".join(R2) + "\n").encode()))
    assert load(path, "quotes", BTC).frame["ts_ns"].tolist() == GOOD_TS[:2]


def test_non_utf8_csv_names_line_and_byte(tmp_path, seeded_store, snapshot):
    path = tmp_path / "latin1.csv"
    path.write_bytes(quotes(R1, edit(R2, symbol="BTCUSDT\u00e9"), R3).encode("latin-1"))
    _refused(path, seeded_store, snapshot, 3, "byte 0xe9", "is not UTF-8", "expected a UTF-8 CSV")
    gz = tmp_path / "latin1.csv.gz"
    import gzip

    gz.write_bytes(gzip.compress(path.read_bytes()))
    _refused(gz, seeded_store, snapshot, 3, "byte 0xe9")


def test_bytes_in_from_frame_are_refused(seeded_store, snapshot):
    from tradebook.data import from_frame

    frame = pd.DataFrame({"ts_ns": GOOD_TS, "bid_px": [1.0, 2.0, 3.0], "ask_px": [1.5, 2.5, 3.5]})
    for column, value in (("bid_px", b"2.0"), ("ts_ns", b"1723161254116723068"), ("symbol", b"BTCUSDT")):
        bad = frame.copy()
        bad[column] = bad[column].astype(object) if column in bad else pd.Series(["BTCUSDT"] * 3, dtype=object)
        bad.loc[1, column] = value
        before = snapshot(seeded_store)
        with pytest.raises(SchemaError) as info:
            seeded_store.ingest(from_frame(bad, "quotes", BTC))
        message = str(info.value)
        assert f"column {column!r} holds the bytes value {value!r} at row 1" in message, message
        assert "decode bytes first" in message
        assert snapshot(seeded_store) == before
    with pytest.raises(DataError, match="takes a pandas DataFrame, got dict"):
        from_frame(frame.to_dict(), "quotes", BTC)


@pytest.mark.parametrize("column, value, code", [
    ("bid_px", "1e300", "implausible_prices"), ("ask_px", "1e13", "implausible_prices"),
    ("bid_px", "1e-13", "implausible_prices"), ("bid_sz", "1e16", "implausible_sizes"),
])
def test_implausible_values_load_with_a_warning(write_csv, store, column, value, code):
    rows = [R1, edit(R2, **{column: value}), R3]
    if column == "bid_px" and value == "1e300":
        rows = [R1, edit(R2, bid_px=value, ask_px="1e301"), R3]  # keep it uncrossed: one finding at a time
    md = load_quotes(write_csv("big.csv", quotes(*rows)), BTC)
    finding = _codes(md)[code]
    assert (finding.severity, finding.first_line) == ("warning", 3)
    assert "unit error or a corrupt print" in finding.message
    result = store.ingest(md)  # loaded unchanged, the finding stored with it
    assert code in store.findings(result.dataset_id)["code"].tolist()
    plain = load_quotes(write_csv("fine.csv", quotes(R1, R2, R3)), BTC)
    assert not any(f.code.startswith("implausible") for f in plain.findings)
