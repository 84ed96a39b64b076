"""`tradebook calibrate --from-fills`: realised costs of paper fills corrected into the fill model (issue 14 #5).

The paper run trades the recorded 2024 BTCUSDT capture with a deliberately mis-calibrated
model: the calibrated cost curve times three, without its depth profile so the paper venue
prices every market order by that curve. The recorded L2 book says what each order really
cost; the correction must move the model's predictions towards it, on the orders it blended
and on the newest ones it held out.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.tca.conftest import add_fill, add_order, at, intent
from tradebook.cli import main
from tradebook.errors import DataError
from tradebook.sim.fill_model import SIZE_BUCKET_EDGES, FillModel, touch_only_curve
from tradebook.store import Store
from tradebook.tca.feedback import (
    TRUTH_BOOK,
    blend_curve,
    calibrate_from_fills,
    from_fills_errors,
    predicted_costs,
    provenance_of,
)

BTC = "BTCUSDT.BINANCE"
RUN = "miscalibrated"  # the paper run of tests/conftest.py: miscalibrated_btc_run


@pytest.fixture
def store_path(miscalibrated_btc_run, tmp_path) -> Path:
    """A copy of the paper run priced by the x3 model (tests/conftest.py: miscalibrated_btc_run)."""
    shutil.copy(miscalibrated_btc_run, tmp_path / "store.duckdb")
    return tmp_path / "store.duckdb"


def test_from_fills_moves_the_models_costs_towards_the_recorded_truth(store_path, capsys):
    assert main(["calibrate", "--from-fills", "--store", str(store_path), "--account", RUN]) == 0
    printed = capsys.readouterr().out
    assert f"{BTC}: {BTC}@v2 corrected with " in printed and f"stored as {BTC}@v3" in printed
    assert "blended: " in printed and "held out: " in printed and " bps before -> " in printed

    with Store(store_path) as store:
        again = calibrate_from_fills(store, BTC, account_id=RUN)  # the same fills: nothing new is stored
        assert again.reused and again.record.calibration_id == f"{BTC}@v3"
        assert store.calibrations(BTC)["calibration_id"].tolist() == [f"{BTC}@v1", f"{BTC}@v2", f"{BTC}@v3"]
        fills = store.fills()
        errors = from_fills_errors(store, BTC)
    provenance = provenance_of(again.record)
    blended = again.orders[again.orders["part"] == "blended"]
    held_out = again.orders[again.orders["part"] == "held out"]
    assert provenance["corrects"] == f"{BTC}@v2" and provenance["accounts"] == [RUN]
    assert provenance["modes"] == ["paper"] and provenance["truth"] == {TRUTH_BOOK: len(blended)}
    assert provenance["orders"] == len(blended) >= 100 and provenance["held_out_orders"] == len(held_out) >= 30
    assert provenance["fills"] == blended["fills"].sum() <= len(fills)
    assert held_out["arrival_ns"].min() >= blended["arrival_ns"].max()  # the newest orders are held out

    # the paper fills were the x3 model's: inside the touch they paid about three half-spreads, the book one
    inside = again.orders[again.orders["size_over_touch"] <= 0.9]
    own = np.where(inside["side"] == "buy", 1, -1) * (inside["avg_price"] - inside["mid"]) / inside["mid"] * 1e4
    assert (own > 2 * inside["half_spread_bps"]).mean() > 0.9
    # (the L2 book and the L1 feed disagree now and then by a tick or a size)
    assert np.isclose(inside["realised_cost_bps"], inside["half_spread_bps"], rtol=1e-6).mean() > 0.9

    # the error before and after, on the orders blended and on those held out, as stored for the report
    for part in ("blended", "held out"):
        before, after = again.error(part)
        assert after < 0.85 * before, (part, before, after)
        row = errors[(errors["calibration_id"] == f"{BTC}@v3") & (errors["part"] == part)].iloc[0]
        assert (row["mae_before_bps"], row["mae_after_bps"]) == pytest.approx((before, after))
    # every size bucket with enough orders moved towards what its orders really cost
    frame = again.orders.assign(bucket=again.model.cost_curve.bucket(again.orders["size_over_touch"].to_numpy()))
    for bucket, orders in frame.groupby("bucket"):
        if len(orders) >= 10:
            gap_before = abs((orders["realised_cost_bps"] - orders["predicted_before_bps"]).median())
            gap_after = abs((orders["realised_cost_bps"] - orders["predicted_after_bps"]).median())
            assert gap_after < gap_before, (bucket, gap_before, gap_after)


def test_the_weights_grow_with_the_number_of_fills():
    # hand-computed: a touch-only curve (ratio 1), half-spread 1 bps, every order cost 2 bps (residual +1
    # half-spread), all in the largest bucket; k = 20
    model = FillModel("X", 0.01, touch_only_curve())

    def orders(n: int) -> pd.DataFrame:
        return pd.DataFrame({"quantity": np.full(n, 20.0), "touch_size": 1.0, "size_over_touch": 20.0,
                             "half_spread_bps": 1.0, "recent_vol_bps": np.nan, "realised_cost_bps": 2.0})

    few, table = blend_curve(model, orders(20), prior_fills=20)
    # pooled shift 1 x 20/40 = 0.5 for every bucket; the filled one 0.5 + 20/40 x (1 - 0.5) = 0.75
    assert few.q50 == pytest.approx((1.5,) * (len(SIZE_BUCKET_EDGES) - 2) + (1.75,))
    assert table["weight"].iloc[-1] == pytest.approx(0.5) and table["orders"].iloc[-1] == 20
    many, _ = blend_curve(model, orders(180), prior_fills=20)
    # pooled 1 x 180/200 = 0.9; the bucket 0.9 + 180/200 x (1 - 0.9) = 0.99
    assert many.q50[-1] == pytest.approx(1.99) and many.q50[0] == pytest.approx(1.9)
    assert predicted_costs(replace(model, cost_curve=many), orders(1))[0] == pytest.approx(1.99)


def test_an_account_without_fills_is_refused_with_the_reason(store_path):
    with Store(store_path) as store, pytest.raises(DataError, match=rf"no fill of {BTC} in account 'nobody' has a "
                                                                    rf"realised cost to correct {BTC}@v2"):
        calibrate_from_fills(store, BTC, account_id="nobody", base=f"{BTC}@v2")
    assert main(["calibrate", "--store", str(store_path), "--account", RUN]) == 2


def test_live_fills_cost_their_own_price_and_paper_fills_the_recorded_touch(hand_store):
    # tests/tca/conftest.py's quotes (sizes 1): t=2 100/102, t=4 101/103, t=12 103/105; no depth recorded
    store = hand_store
    store.save_calibration(BTC, FillModel(BTC, 0.01, touch_only_curve()).to_json(), data_start_ns=at(0),
                           data_end_ns=at(200), dataset_ids=[], diagnostics={})
    live = add_order(store, intent("live", "buy", "0.5"), status="filled", filled="0.5", created=2.5, last=4)
    with store.transaction() as con:  # as a live session's order manager would have copied it
        con.execute("UPDATE orders SET mode = 'live' WHERE client_order_id = ?", [live])
    add_fill(store, live, "f-live", "buy", "0.5", "102.5", 4)  # against the mid at submission (t=2.5: 101)
    paper = add_order(store, intent("paper", "buy", "0.5"), status="filled", filled="0.5", created=3.5, last=4)
    add_fill(store, paper, "f-paper", "buy", "0.5", "103", 4)  # the touch at arrival (t=4: 101/103) held 0.5
    big = add_order(store, intent("big", "buy", "2"), status="filled", filled="2", created=12.2, last=12.5)
    add_fill(store, big, "f-big", "buy", "2", "104", 12.5)  # twice the touch and no recorded book: no truth

    result = calibrate_from_fills(store, BTC, holdout=0, prior_fills=20)
    orders = result.orders.set_index("client_order_id")
    assert result.skipped == {"beyond the touch with no recorded book": 1} and big not in orders.index
    assert orders.loc[live, "truth"] == "own fill" and orders.loc[paper, "truth"] == "touch"
    assert orders.loc[live, "realised_cost_bps"] == pytest.approx(1.5 / 101 * 1e4)
    assert orders.loc[paper, "realised_cost_bps"] == pytest.approx(1 / 102 * 1e4)  # the half-spread
    assert orders.loc[live, "predicted_before_bps"] == pytest.approx(1 / 101 * 1e4)  # touch-only: the half-spread
    # residuals in half-spreads: live +0.5, paper 0 (both in the 0.5-1 bucket); pooled 0.25 x 2/22, the bucket
    # 0.25 x 2/22 + 2/22 x (0.25 - 0.25 x 2/22); the median never falls with size
    pooled = 0.25 * 2 / 22
    bucket = pooled + 2 / 22 * (0.25 - pooled)
    assert result.model.cost_curve.q50 == pytest.approx((1 + pooled,) * 4 + (1 + bucket,) * 6)
    assert provenance_of(result.record)["modes"] == ["live", "paper"]
    assert provenance_of(result.record)["truth"] == {"own fill": 1, "touch": 1}
