"""cost_against_mid: the one rule for a fill's cost against the mid in force, strict or not (conftest.py's quotes)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tests.tca.conftest import BTC, at
from tradebook.errors import DataError
from tradebook.tca import cost_against_mid, mids_for_fills, quote_mids


def fills_at(*rows: tuple[float, str, float]) -> pd.DataFrame:
    return pd.DataFrame({"ts_ns": [at(t) for t, _, _ in rows], "instrument_id": BTC,
                         "side": [side for _, side, _ in rows], "price": [price for _, _, price in rows]})


def test_the_mid_in_force_is_the_last_quote_at_or_before_the_fill(hand_store):
    # t=2 is a quote's own instant (mid 101, known); t=3 still sees it; t=4.5 sees t=4's (102)
    fills = fills_at((2, "buy", 101.5), (3, "sell", 100.5), (4.5, "buy", 101.0))
    mids = mids_for_fills(hand_store, fills)
    out = cost_against_mid(fills, mids, strict=True)
    assert out["mid"].tolist() == [101.0, 101.0, 102.0]
    assert out["quote_ts_ns"].tolist() == [at(2), at(2), at(4)]
    assert out["cost_bps"].tolist() == pytest.approx([0.5 / 101 * 1e4, 0.5 / 101 * 1e4, -1 / 102 * 1e4], rel=1e-12)
    # the quotes read for it are only those in force at the fills, and agree with the whole range read
    assert mids[BTC]["ts_ns"].tolist() == [at(2), at(4)]
    whole = {BTC: quote_mids(hand_store, BTC, at(0), at(300))}
    assert cost_against_mid(fills, whole, strict=True)["cost_bps"].tolist() == out["cost_bps"].tolist()


def test_a_fill_before_any_quote_is_nan_or_an_error_naming_it(hand_store):
    fills = fills_at((-1, "buy", 100.0), (5, "buy", 103.0))
    loose = cost_against_mid(fills, mids_for_fills(hand_store, fills), strict=False)
    assert math.isnan(loose["mid"].iloc[0]) and math.isnan(loose["cost_bps"].iloc[0])
    assert loose["quote_ts_ns"].isna().tolist() == [True, False] and loose["mid"].iloc[1] == 102.0
    with pytest.raises(DataError, match=f"a fill of {BTC} at {at(-1)} has no quote before it"):
        cost_against_mid(fills, mids_for_fills(hand_store, fills), strict=True)
    with pytest.raises(DataError, match="no quotes of ETHUSDT.BINANCE"):
        cost_against_mid(fills.assign(instrument_id="ETHUSDT.BINANCE"), {}, strict=True)
