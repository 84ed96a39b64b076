"""Calibrating from any data: your own files and frames, with provenance, and clear refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tradebook.sim
from tradebook.data import bundled_data_dir, instrument_from_dict, load_bundled
from tradebook.data.schemas import DataKind
from tradebook.errors import DataError, SchemaError, StoreError, UnknownInstrumentError
from tradebook.sim.fill_model import FillModel
from tradebook.sim.sources import calibrate_from, detect_kind
from tradebook.store import Store

FUT = Path("ticks/futures")
ESU4_QUOTES = FUT / "cme_ESU4_mbp1_20240701T2358-20240702T0002.csv.gz"
ESU4_TRADES = FUT / "cme_ESU4_trades_20240701T2358-20240702T0002.csv.gz"
ESH4_BOOK = FUT / "cme_ESH4_book5_from_mbo_20231225.csv.gz"
BTC = Path("ticks/crypto/binance_spot_btcusdt_20240808T2354-20240809T0005_")
EURUSD_DUKASCOPY = Path("ticks/fx/dukascopy_EURUSD_20260713T12_ticks.csv.gz")

# A user's own instrument: the ES September contract under a venue name tradebook does not bundle.
MINE = {"instrument_id": "ESU4.MYFCM", "asset_class": "future", "currency": "USD", "tick": "0.25", "lot": "1",
        "multiplier": "50", "calendar": "CMES", "symbol": "ESU4"}


def data(path: Path) -> Path:
    return bundled_data_dir() / path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_own_instrument_from_files_is_stored_with_its_files_and_hashes(tmp_path):
    definition = tmp_path / "mine.json"
    definition.write_text(json.dumps(MINE))
    with Store(tmp_path / "own.duckdb") as store:
        result = calibrate_from("ESU4.MYFCM", quotes=data(ESU4_QUOTES), trades=data(ESU4_TRADES),
                                instrument_file=definition, store=store)
        assert result.record.calibration_id == "ESU4.MYFCM@v1"
        assert store.instrument("ESU4.MYFCM").tick_size == pytest.approx(0.25)  # registered with its model
        stored = store.calibration("ESU4.MYFCM@v1")
    model = FillModel.from_json(stored.params)
    assert model.instrument_id == "ESU4.MYFCM" and stored.params == result.model.to_json()
    assert stored.diagnostics["sweeps"] > 50 and stored.diagnostics["quotes"] > 1000
    files = stored.diagnostics["files"]
    assert [(f["role"], f["kind"]) for f in files] == [("quotes", "mbp1"), ("trades", "trades")]
    assert files[0]["sha256"] == sha256(data(ESU4_QUOTES)) and files[1]["sha256"] == sha256(data(ESU4_TRADES))
    assert files[0]["rows"] == 2288 and files[1]["rows"] == 120
    assert files[0]["source"].endswith(ESU4_QUOTES.name)
    assert stored.dataset_ids == ()  # fitted from files, not from stored datasets


def test_frames_and_files_give_the_same_model():
    instrument = instrument_from_dict(MINE)
    from_files = calibrate_from(instrument, data(ESU4_QUOTES), data(ESU4_TRADES), seed=3)
    quotes, trades = (load_bundled(p.name).frame for p in (ESU4_QUOTES, ESU4_TRADES))
    from_frames = calibrate_from(instrument, quotes, trades, seed=3)
    assert from_frames.model.to_json() == from_files.model.to_json()
    assert from_frames.record is None  # no store: nothing written
    assert [s.source for s in from_frames.sources] == ["<quotes frame>", "<trades frame>"]
    assert from_frames.sources[0].sha256 != from_files.sources[0].sha256  # a frame's hash is of its contents
    again = calibrate_from(instrument, quotes, trades, seed=3)
    assert again.sources == from_frames.sources


def test_a_calibration_from_l2_depth_fits_the_depth_profile():
    result = calibrate_from("BTCUSDT.BINANCE", data(Path(str(BTC) + "l1_quotes.csv.gz")),
                            data(Path(str(BTC) + "trades.csv.gz")), data(Path(str(BTC) + "l2_depth.csv.gz")))
    assert [s.kind for s in result.sources] == ["quotes", "trades", "depth"]
    assert result.model.depth is not None and result.calibration.diagnostics["book_samples"] > 1000


def test_quote_only_fx_calibrates():
    result = calibrate_from("EURUSD.DUKASCOPY", data(EURUSD_DUKASCOPY))
    assert result.model.instrument_id == "EURUSD.DUKASCOPY" and result.calibration.diagnostics["sweeps"] == 0


def test_detect_kind_from_columns():
    assert detect_kind(["ts_ns", "bid_px", "ask_px", "bid_sz", "ask_sz"]) == DataKind.QUOTES
    assert detect_kind(["ts_ns", "bid_px_0", "ask_px_0"]) == DataKind.BOOK
    assert detect_kind(["ts_ns", "action", "side", "price", "size", "bid_px", "ask_px"]) == DataKind.MBP1
    assert detect_kind(["ts_ns", "kind", "side", "price", "qty"]) == DataKind.DEPTH
    assert detect_kind(["ts_ns", "price", "qty", "buyer_is_maker"]) == DataKind.TRADES
    assert detect_kind(["ts_ns", "open", "high", "low", "close", "volume"]) == DataKind.TRADE_BARS
    assert detect_kind(["when", "what"]) is None


# -- refusals ---------------------------------------------------------------------------------------
def test_a_depth_file_for_another_instrument_is_refused():
    # a top-N book names its symbol: the ESH4 book is not ESU4's
    with pytest.raises(DataError, match="symbol 'ESH4' does not match instrument ESU4.GLBX"):
        calibrate_from("ESU4.GLBX", data(ESU4_QUOTES), depth=data(ESH4_BOOK))
    # Binance depth has no symbol: its prices give it away (another pair's book at the same times)
    quotes = load_bundled(str(BTC.name) + "l1_quotes.csv.gz").frame
    depth = load_bundled(str(BTC.name) + "l2_depth.csv.gz").frame
    other_pair = depth.assign(price=(depth["price"] / 20).round(2))
    with pytest.raises(DataError, match=r"the depth are priced around 3,0\d\d.* but the quotes of BTCUSDT.BINANCE "
                                        r"around 6\d,\d{3}.*depth for another instrument\?"):
        calibrate_from("BTCUSDT.BINANCE", quotes, depth=other_pair)
    # and its times: another capture's depth does not overlap the quotes
    shifted = depth.assign(ts_ns=depth["ts_ns"] - 86_400_000_000_000,
                           ts_event_ns=depth["ts_event_ns"] - 86_400_000_000_000)
    with pytest.raises(DataError, match="the depth .* do not overlap the quotes"):
        calibrate_from("BTCUSDT.BINANCE", quotes, depth=shifted)


def test_trades_of_another_instrument_are_refused():
    quotes = load_bundled(str(BTC.name) + "l1_quotes.csv.gz").frame
    trades = load_bundled(str(BTC.name) + "trades.csv.gz").frame
    with pytest.raises(DataError, match="the trades are priced around .* trades for another instrument"):
        calibrate_from("BTCUSDT.BINANCE", quotes, trades.assign(price=trades["price"] * 3))


def test_quotes_with_no_sizes_are_refused():
    with pytest.raises(DataError, match=r"the quotes carry no sizes .* calibrating EURUSD.FXCM needs touch sizes"):
        calibrate_from("EURUSD.FXCM", data(Path("ticks/fx/fxcm_EURUSD_20140506_ticks.csv.gz")))
    quotes = load_bundled(EURUSD_DUKASCOPY.name).frame
    with pytest.raises(DataError, match="carry no sizes"):
        calibrate_from("EURUSD.DUKASCOPY", quotes.assign(bid_sz=np.nan, ask_sz=np.nan))


def test_files_of_the_wrong_kind_are_refused():
    with pytest.raises(DataError, match=r"this is not a quotes file: its columns .* hold trades data; expected L1"):
        calibrate_from("ESU4.GLBX", data(ESU4_TRADES))
    with pytest.raises(DataError, match=r"this is not a trades file: .* hold mbp1 data"):
        calibrate_from("ESU4.GLBX", data(ESU4_QUOTES), trades=data(ESU4_QUOTES))
    with pytest.raises(DataError, match=r"this is not a depth file: .* hold trades data"):
        calibrate_from("ESU4.GLBX", data(ESU4_QUOTES), depth=data(ESU4_TRADES))
    bars = data(Path("bars/minute/spy_trade.csv.gz"))
    with pytest.raises(DataError, match="hold trade_bars data"):
        calibrate_from("SPY.ARCX", bars)
    with pytest.raises(DataError, match="quotes cannot be trades data"):
        calibrate_from("ESU4.GLBX", data(ESU4_QUOTES), quotes_kind="trades")
    with pytest.raises(DataError, match="no such file"):
        calibrate_from("ESU4.GLBX", data(FUT / "nope.csv.gz"))


def test_a_bad_file_is_refused_with_its_line(tmp_path):
    bad = tmp_path / "quotes.csv"
    bad.write_text("ts_ns,bid_px,ask_px,bid_sz,ask_sz\n1,99.0,99.5,1,1\n2,99.1,oops,1,1\n")
    with pytest.raises(SchemaError, match="line 3"):
        calibrate_from("ESU4.GLBX", bad)


def test_an_unknown_instrument_says_how_to_define_it():
    with pytest.raises(UnknownInstrumentError, match="define it with instrument_file="):
        calibrate_from("NOPE.NOWHERE", data(ESU4_QUOTES))


def test_the_same_fit_of_the_same_files_is_not_stored_twice(tmp_path):
    instrument = instrument_from_dict(MINE)
    with Store(tmp_path / "again.duckdb") as store:
        first = calibrate_from(instrument, data(ESU4_QUOTES), data(ESU4_TRADES), store=store)
        again = calibrate_from(instrument, data(ESU4_QUOTES), data(ESU4_TRADES), store=store)
        assert again.record.calibration_id == first.record.calibration_id == "ESU4.MYFCM@v1"
        fewer_files = calibrate_from(instrument, data(ESU4_QUOTES), store=store)
        assert fewer_files.record.calibration_id == "ESU4.MYFCM@v2"
        assert len(store.calibrations("ESU4.MYFCM")) == 2
        # a different definition under a stored id is refused, not replaced
        with pytest.raises(StoreError, match="ESU4.MYFCM"):
            calibrate_from(instrument_from_dict({**MINE, "tick": "0.5"}), data(ESU4_QUOTES), store=store)
        assert len(store.calibrations("ESU4.MYFCM")) == 2


def test_an_equity_calibration_says_which_prints_were_not_liquidity():
    result = calibrate_from("IBM.XNYS", data(Path("ticks/equities/algoseek_IBM_20131007_l1_nbbo.csv.gz")),
                            data(Path("ticks/equities/algoseek_IBM_20131007_trades.csv.gz")))
    # regular hours only (the extended-hours prints are cut by the session first)
    excluded = result.calibration.diagnostics["trades_not_liquidity"]
    assert excluded["off_exchange"] > 5000 and excluded["suspicious"] == 0
    assert result.calibration.diagnostics["sweeps"] == 11_898  # the lit sweeps of truth.sweeps


def test_the_package_names_the_entry_point():
    assert tradebook.sim.calibrate_from is calibrate_from


def test_l1_quotes_with_a_top_n_book_as_depth():
    book = load_bundled(ESH4_BOOK.name).frame
    l1 = book[["ts_ns", "bid_px_0", "ask_px_0", "bid_sz_0", "ask_sz_0"]].rename(columns=lambda c: c.replace("_0", ""))
    result = calibrate_from("ESH4.GLBX", l1, depth=book)
    assert [(s.role, s.kind) for s in result.sources] == [("quotes", "quotes"), ("depth", "book")]
    assert result.data.book is not None and result.model.depth is not None
    same = calibrate_from("ESH4.GLBX", book)  # the book alone is its own L1 and depth
    assert same.model.depth is not None and same.model.depth == result.model.depth
