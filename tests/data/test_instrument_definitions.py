"""Your own instruments: definitions from dicts and files, registered in the store with their data."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

import tradebook as tb
from tradebook.data import load_quotes
from tradebook.data.instruments import instrument_from_dict, load_instrument_file
from tradebook.errors import DataError, StoreError, UnknownInstrumentError

DOGE = {"instrument_id": "DOGEUSDT.BINANCE", "asset_class": "crypto_spot", "currency": "USDT",
        "base_currency": "DOGE", "tick": "0.00001", "lot": "1", "min_notional": "1"}
QUOTES = ("ts_ns,bid_px,ask_px,bid_sz,ask_sz\n"
          "1723161253937085768,0.10251,0.10252,100,200\n"
          "1723161254937085768,0.10252,0.10254,300,20\n")


def test_a_definition_makes_an_instrument_that_conforms_orders():
    doge = tb.instrument_from_dict(DOGE)
    assert (doge.symbol, doge.venue, doge.asset_class) == ("DOGEUSDT", "BINANCE", tb.AssetClass.CRYPTO_SPOT)
    assert (doge.tick_size, doge.lot_size, doge.min_quantity, doge.min_notional) == (
        Decimal("0.00001"), Decimal(1), Decimal(1), Decimal(1))
    assert doge.trading_hours.always_open and doge.trading_hours.calendar == "24/7"
    assert doge.conform_price("0.102515", rounding="passive", side="buy") == Decimal("0.10251")
    with pytest.raises(tb.ConformanceError, match="below the minimum 1 USDT"):
        doge.conform_order("0.1", "5", side="buy")
    equity = tb.instrument_from_dict({"instrument_id": "ACME.XNYS", "asset_class": "equity", "currency": "usd",
                                      "tick": 0.01, "lot": 1, "min_size": 1})
    assert equity.trading_hours.calendar == "XNYS" and equity.tick_size == Decimal("0.01")
    custom = tb.instrument_from_dict({**DOGE, "hours": {"timezone": "Asia/Tokyo", "open": "09:00",
                                                        "close": "15:00", "weekdays": [0, 1, 2, 3, 4]}})
    assert custom.trading_hours.timezone == "Asia/Tokyo"


@pytest.mark.parametrize("change, message", [
    ({"asset_class": "stock"}, "asset_class 'stock' is not one of equity, crypto_spot, future, fx_spot"),
    ({"tick": "0"}, "tick is 0; expected a number > 0"),
    ({"tick": "-0.01"}, "tick is -0.01; expected a number > 0"),
    ({"tick": "abc"}, "tick is 'abc'; expected a number"),
    ({"tick": "1e-15"}, "at most 12 decimal places"),
    ({"lot": "NaN"}, "lot is 'NaN'; expected a number"),
    ({"lot": True}, "lot is True; expected a number"),
    ({"min_notional": "1e400"}, "at most 1,000,000,000,000"),
    ({"min_size": "1.5"}, "min_size 1.5 is not a multiple of the lot 1"),
    ({"instrument_id": "DOGEUSDT"}, "instrument_id 'DOGEUSDT' is not SYMBOL.VENUE"),
    ({"calendar": "LSE"}, "calendar 'LSE' is not one of XNYS, CMES, 24/5, 24/7"),
    ({"tik": "0.01"}, "unknown key 'tik'"),
    ({"tick_size": "0.01"}, "given twice"),
    ({"hours": {"timezone": "Mars/Base", "open": "09:00", "close": "10:00"}}, "not an IANA time zone"),
])
def test_bad_definitions_say_what_is_wrong(change, message):
    with pytest.raises(DataError, match=None) as caught:
        tb.instrument_from_dict({**DOGE, **change})
    assert message in str(caught.value)


def test_missing_keys_are_listed():
    with pytest.raises(DataError, match="lacks asset_class, tick"):
        instrument_from_dict({"instrument_id": "X.Y", "currency": "USD", "lot": 1})


def test_definition_files_yaml_and_json(tmp_path):
    yaml_file = tmp_path / "doge.yaml"
    yaml_file.write_text("".join(f"{k}: {v}\n" for k, v in DOGE.items()).replace('"', ""))
    json_file = tmp_path / "doge.json"
    json_file.write_text(json.dumps(DOGE))
    assert load_instrument_file(yaml_file) == load_instrument_file(json_file) == instrument_from_dict(DOGE)
    # 0.1 in YAML is exactly 0.1, never a binary float
    yaml_file.write_text(yaml_file.read_text().replace("0.00001", "0.1"))
    assert load_instrument_file(yaml_file).tick_size == Decimal("0.1")


@pytest.mark.parametrize("name, content, message", [
    ("dup.yaml", b"instrument_id: A.B\ninstrument_id: C.D\n", "line 2: key 'instrument_id' is given twice"),
    ("bin.yaml", b"instrument_id: A.B\n\xff\xfe\x00", "line 2: byte 19 is not UTF-8"),
    ("list.yaml", b"- 1\n- 2\n", "a mapping of keys to values, got list"),
    ("bad.yaml", b"a: [1,\n", "not valid YAML"),
    ("bad.json", b'{"a": 1,,}', "line 1: not valid JSON"),
    ("dup.json", b'{"a": 1, "a": 2}', "key 'a' is given twice"),
    ("big.yaml", b"#" * 70_000, "larger than 64,000 bytes"),
])
def test_bad_definition_files_are_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        load_instrument_file(path)
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_loading_with_your_own_instrument_registers_it_with_the_data(tmp_path, snapshot):
    csv = tmp_path / "doge.csv"
    csv.write_text(QUOTES)
    with pytest.raises(UnknownInstrumentError, match="unknown instrument 'DOGEUSDT.BINANCE'"):
        load_quotes(csv, "DOGEUSDT.BINANCE")
    doge = tb.instrument_from_dict(DOGE)
    with tb.Store(tmp_path / "own.duckdb") as store:
        result = store.ingest(load_quotes(csv, doge))
        assert result.created and store.instrument("DOGEUSDT.BINANCE") == doge
        quotes = store.quotes("DOGEUSDT.BINANCE")
        assert len(quotes) == 2 and quotes.attrs["instrument_id"] == "DOGEUSDT.BINANCE"
        # the same definition again is a no-op; another one under the same id is refused, nothing written
        assert not store.ingest(load_quotes(csv, doge)).created
        before = snapshot(store)
        other = tb.instrument_from_dict({**DOGE, "tick": "0.001"})
        with pytest.raises(StoreError, match=r"already registered.*tick_size 0.00001 -> 0.001.*nothing was written"):
            store.ingest(load_quotes(csv, other))
        with pytest.raises(StoreError, match="tick_size 0.00001 -> 0.001"):
            store.register_instruments([other], replace=False)
        assert snapshot(store) == before
        with pytest.raises(StoreError, match="takes Instrument objects"):
            store.register_instruments([DOGE])  # a dict is not an instrument
        assert snapshot(store) == before


def test_a_refused_ingest_does_not_register_the_instrument(tmp_path, snapshot):
    csv = tmp_path / "inf.csv"
    csv.write_text(QUOTES)
    import dataclasses

    md = load_quotes(csv, tb.instrument_from_dict(DOGE))
    frame = md.frame.copy()
    frame.loc[1, "bid_sz"] = float("inf")  # past the loader, only the store's own check stops it
    with tb.Store(tmp_path / "own.duckdb") as store:
        before = snapshot(store)
        with pytest.raises(StoreError, match="infinite"):
            store.ingest(dataclasses.replace(md, frame=frame))
        assert snapshot(store) == before
