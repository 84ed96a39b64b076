"""tb.Session end to end, driven like a notebook: a real store, real recorded quotes, a stored calibration.

The session has no feed here: each test hands it the recorded BTCUSDT (or IBM) quotes and
trades one 1 s batch at a time with :meth:`Session.step`, so session time, and with it
every order's request time, is known exactly. Expected quantities, prices, fees, cash and
P&L are computed by hand from the recorded frames and the rules (Half-Kelly, the router's
thresholds, the calibrated model's latency and Binance's 10 bps taker fee), in Decimal.
"""

from __future__ import annotations

import asyncio
import shutil
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradebook.config import RiskConfig, SessionConfig, TradebookConfig, load_config
from tradebook.data import load_bundled
from tradebook.data.feeds import FeedBatch, QuoteArrays, ReplayFeed
from tradebook.errors import (
    ConfigError,
    ConformanceError,
    DataError,
    OrderError,
    TradebookError,
    UnknownInstrumentError,
)
from tradebook.model.instruments import Side
from tradebook.model.orders import OrderIntent, OrderType, Signal, TimeInForce, client_order_id_for
from tradebook.session import Session, oms_journal_name
from tradebook.sim.fidelity import load_model, run_calibration
from tradebook.sim.orders import latency_ns
from tradebook.store import Store
from tradebook.venues.paper import PaperVenue

BTC = "BTCUSDT.BINANCE"
IBM = "IBM.XNYS"
FILES = "binance_spot_btcusdt_20240808T2354-20240809T0005_"
SECOND = 1_000_000_000
CASH = Decimal("100000")
TAKER = Decimal("0.001")  # Binance's base-tier taker fee, 10 bps (the calibration's fee schedule)
LOT = Decimal("0.00001")
IBM_PREMARKET = 1_381_147_200_000_000_000  # 2013-10-07T12:00:00Z = 08:00 New York: extended hours only


def dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def frames() -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    btc = load_bundled(FILES + "l1_quotes.csv.gz"), load_bundled(FILES + "trades.csv.gz")
    ibm = load_bundled("algoseek_IBM_20131007_l1_nbbo.csv.gz"), load_bundled("algoseek_IBM_20131007_trades.csv.gz")
    return {"data": (*btc, *ibm), BTC: (btc[0].frame, btc[1].frame), IBM: (ibm[0].frame, ibm[1].frame)}


@pytest.fixture(scope="module")
def template(tmp_path_factory, frames) -> Path:
    """A store with the bundled BTCUSDT and IBM quotes and trades and a calibration of each."""
    path = tmp_path_factory.mktemp("session") / "template.duckdb"
    with Store(path) as store:
        for data in frames["data"]:
            store.ingest(data)
        run_calibration(store, [BTC, IBM])
    return path


@pytest.fixture
def store(template, tmp_path) -> Store:
    shutil.copy(template, tmp_path / "store.duckdb")
    s = Store(tmp_path / "store.duckdb")
    yield s
    s.close()


@pytest.fixture(scope="module")
def batches(frames) -> list[FeedBatch]:
    """The recorded BTCUSDT quotes and trades in 1 s batches (what a ReplayFeed gives a session)."""
    quotes, trades = frames[BTC]
    return list(ReplayFeed({BTC: quotes}, {BTC: trades}).batches())


@pytest.fixture
def sessions():
    """Sessions a test starts; stopped at the end even when the test fails."""
    started: list[Session] = []
    yield started
    for session in started:
        session.stop()


def start(store: Store, tmp_path: Path, sessions: list, name: str = "state", **kwargs) -> Session:
    kwargs.setdefault("calibrations", [BTC])
    session = Session(store, state_dir=tmp_path / name, **kwargs).start()
    sessions.append(session)
    return session


def steps(session: Session, batches: list[FeedBatch], lo: int, hi: int) -> None:
    for batch in batches[lo:hi]:
        session.step(batch)


def quote_at(quotes: pd.DataFrame, ts_ns: int) -> pd.Series:
    """The quote in force at ``ts_ns``: the last one stamped at or before it."""
    return quotes[quotes["ts_ns"] <= ts_ns].iloc[-1]


def arrival(store: Store, request_ts: int, k: int) -> int:
    """When the k-th request (0-based) sent at ``request_ts`` reaches the paper venue's matching engine."""
    lat = load_model(store, BTC).latency
    return request_ts + int(latency_ns(0, k, 0, lat.submit_to_ack_median_ns, lat.sigma))


def signal(signal_id: str, side: str = "buy", *, instrument: str = BTC, strength: float = 0.95,
           quantity: str | None = "0.01", **kwargs) -> Signal:
    return Signal("nb", signal_id, instrument, Side(side), None, strength=strength,
                  quantity=Decimal(quantity) if quantity is not None else None, **kwargs)


def venue_after(store: Store, tmp_path: Path, name: str = "state") -> PaperVenue:
    """The paper venue's own books, opened from its journal after the session stopped (the broker's view)."""
    return PaperVenue.from_store(store, [BTC], tmp_path / name / "paper")


def run(coroutine):
    return asyncio.run(coroutine)


# -- done when 1: signals through sizing, risk and router to fills, positions and P&L -----------
def test_half_kelly_market_round_trip_matches_a_hand_calculation(store, tmp_path, sessions, batches, frames):
    quotes, _ = frames[BTC]
    s = start(store, tmp_path, sessions)
    steps(s, batches, 0, 5)
    now = batches[4].end_ns - 1
    assert s.status()["session_time"] == pd.Timestamp(now, unit="ns", tz="UTC").isoformat().replace("+00:00", "Z")

    # Half-Kelly: p = 0.52, b = 0.01 / 0.01 = 1 -> f* = (0.52 - 0.48) / 1 = 0.04; half = 0.02 (under the 5 % cap)
    last = quote_at(quotes, now)
    mid = (dec(last["bid_px"]) + dec(last["ask_px"])) / 2
    quantity = (CASH * Decimal("0.02") / mid / LOT).to_integral_value(rounding=ROUND_FLOOR) * LOT
    buy = Signal("nb", "entry", BTC, Side.BUY, now, strength=0.95, win_rate=0.52, avg_win=0.01, avg_loss=0.01)
    [order] = s.submit(buy)
    assert (order.intent.intent_id, order.intent.side, order.intent.quantity, order.intent.order_type,
            order.intent.time_in_force, order.intent.ts_ns) == \
        ("nb:entry", Side.BUY, quantity, OrderType.MARKET, TimeInForce.IOC, now)
    assert order.client_order_id == client_order_id_for("nb:entry", s.account_id)
    decision = s.decisions_frame().iloc[-1]
    assert decision["outcome"] == "sent" and "half Kelly 0.02 (f*=0.04)" in decision["reason"]
    assert "strength 0.95 > 0.9: market" in decision["reason"]
    assert s.submit(buy) == [s.oms.order(order.client_order_id)]  # a re-run cell sends nothing new
    assert len(s.orders()) == 1

    # the venue fills at the ask in force when the request arrives, after the calibrated latency
    steps(s, batches, 5, 10)
    buy_at = arrival(store, now, 0)
    buy_px = dec(quote_at(quotes, buy_at)["ask_px"])
    buy_fee = quantity * buy_px * TAKER

    now2 = batches[9].end_ns - 1
    [close] = s.submit(signal("exit", "sell", quantity=str(quantity)))
    steps(s, batches, 10, 12)
    sell_at = arrival(store, now2, 1)
    sell_px = dec(quote_at(quotes, sell_at)["bid_px"])
    sell_fee = quantity * sell_px * TAKER

    fills = s.fills()
    assert fills[["client_order_id", "side", "quantity", "price", "fee", "liquidity", "ts_event_ns"]].values.tolist() \
        == [[order.client_order_id, "buy", quantity, buy_px, buy_fee, "taker", buy_at],
            [close.client_order_id, "sell", quantity, sell_px, sell_fee, "taker", sell_at]]
    orders = s.orders().set_index("intent_id")
    assert orders.loc["nb:entry", "status"] == "filled" and orders.loc["nb:exit", "status"] == "filled"
    assert orders.loc["nb:exit", "avg_price"] == sell_px

    realised = (sell_px - buy_px) * quantity - buy_fee - sell_fee
    cash = CASH - quantity * buy_px - buy_fee + quantity * sell_px - sell_fee
    [position] = s.positions().to_dict("records")
    assert (position["strategy_id"], position["quantity"], position["realised_pnl"], position["fees"],
            position["unrealised_pnl"]) == ("nb", Decimal(0), realised, buy_fee + sell_fee, Decimal(0))
    status = s.status()
    assert (status["cash"], status["equity"], status["realised_pnl"], status["fills"], status["working_orders"]) == \
        (cash, cash, realised, 2, 0)

    s.stop()  # flushes the order path into the store
    stored = store.fills().sort_values("ts_event")
    assert stored["fill_id"].tolist() == fills["fill_id"].tolist()
    assert stored["price"].tolist() == [float(buy_px), float(sell_px)]
    assert set(store.orders()["status"]) == {"filled"}
    venue = venue_after(store, tmp_path)  # the broker's books agree with ours
    assert run(venue.positions()) == {} and run(venue.account()).cash == cash

    # a new session on the same store and state picks up where this one stopped
    again = start(store, tmp_path, sessions)
    assert (again.status()["cash"], again.status()["realised_pnl"], len(again.orders())) == (cash, realised, 2)
    assert again.submit(buy) == [again.oms.order(order.client_order_id)]


def test_no_edge_means_no_order_with_the_reason(store, tmp_path, sessions, batches):
    s = start(store, tmp_path, sessions)
    steps(s, batches, 0, 3)
    # p = 0.4, b = 1: f* = (0.4 - 0.6) / 1 = -0.2
    assert s.submit(Signal("nb", "weak", BTC, Side.BUY, None, win_rate=0.4, avg_win=0.01, avg_loss=0.01)) == []
    decision = s.decisions_frame().iloc[-1]
    assert (decision["outcome"], decision["reason"]) == ("no order", "kelly fraction -0.2 <= 0: no edge")
    assert s.orders().empty


# -- done when 2: the kill switch, the breaker, algos, the spread filter, market hours ---------
def test_halt_rejects_with_the_reason_and_sends_nothing_and_survives_a_restart(store, tmp_path, sessions, batches):
    s = start(store, tmp_path, sessions)
    steps(s, batches, 0, 3)
    s.halt("news pending")
    [order] = s.submit(signal("after-halt"))
    assert (str(order.status), order.reason, order.venue_order_id) == \
        ("rejected", "risk kill_switch: kill switch halted: news pending", None)
    assert s.decisions_frame().iloc[-1]["outcome"] == "rejected"
    s.stop()
    assert run(venue_after(store, tmp_path).order_status(order.client_order_id)) is None  # never sent
    with pytest.warns(UserWarning, match=r"starts with its kill switch halted \(carried over from an earlier "
                                         r"session: news pending\); new orders are refused"):
        again = start(store, tmp_path, sessions)
    assert again.status()["kill_switch"] == "halted"
    again.resume_trading("news out")
    steps(again, batches, 3, 4)
    [order] = again.submit(signal("after-resume"))
    assert str(order.status) == "submitted"


def test_reduce_only_refuses_increases_and_sends_reductions(store, tmp_path, sessions, batches):
    s = start(store, tmp_path, sessions)
    steps(s, batches, 0, 3)
    s.submit(signal("open", quantity="0.02"))
    steps(s, batches, 3, 5)
    s.reduce_only("end of day")
    [more] = s.submit(signal("more", quantity="0.01"))
    assert str(more.status) == "rejected"
    assert more.reason == ("risk kill_switch: kill switch reduce-only (end of day): buy 0.01000 BTCUSDT.BINANCE would "
                           "not reduce the position +0.02000")
    [less] = s.submit(signal("less", "sell", quantity="0.005"))
    steps(s, batches, 5, 7)
    assert str(s.oms.order(less.client_order_id).status) == "filled"
    assert s.positions()["quantity"].tolist() == [Decimal("0.015")]


def test_flatten_cancels_working_orders_then_closes_positions_at_market(store, tmp_path, sessions, batches, frames):
    quotes, _ = frames[BTC]
    s = start(store, tmp_path, sessions)
    steps(s, batches, 0, 3)
    s.submit(signal("long", quantity="0.02"))
    steps(s, batches, 3, 5)
    now = batches[4].end_ns - 1
    bid = dec(quote_at(quotes, now)["bid_px"])
    resting = OrderIntent("nb:resting", "nb", "paper", BTC, Side.BUY, Decimal("0.01"), OrderType.LIMIT,
                          TimeInForce.GTC, now, limit_price=(bid * Decimal("0.995")).quantize(Decimal("0.01")))
    [working] = s.submit(resting)
    steps(s, batches, 5, 6)
    assert str(s.oms.order(working.client_order_id).status) == "accepted"

    flatten_ts = batches[5].end_ns - 1
    acted = s.flatten("risk off")
    # the cancel is asked for at once; the closing order waits for the venue's answer
    assert [(o.intent.intent_id, str(o.status)) for o in acted] == [("nb:resting", "pending_cancel")]
    assert s.status()["kill_switch"] == "reduce_only"
    steps(s, batches, 6, 7)
    closing_id = f"flatten:{flatten_ts}:flatten:paper:nb:{BTC}"
    closing = s.oms.order_for_intent(closing_id)
    assert (closing.intent.side, closing.intent.quantity, closing.intent.order_type, closing.intent.reduce_only) == \
        (Side.SELL, Decimal("0.02"), OrderType.MARKET, True)
    steps(s, batches, 7, 9)
    orders = s.orders().set_index("intent_id")
    assert orders.loc["nb:resting", ["status", "reason"]].tolist() == ["cancelled", "cancelled on request"]
    assert orders.loc[closing_id, "status"] == "filled"
    assert s.positions()["quantity"].tolist() == [Decimal(0)]
    assert s.flatten("again") == []  # nothing working, nothing held: nothing to do
    [refused] = s.submit(signal("new-long"))
    assert "kill switch reduce-only" in refused.reason


class FlakyVenue(PaperVenue):
    """A paper venue whose connection fails while ``down`` (submit raises, as a broker's network call would)."""

    down = False

    async def submit(self, intent: OrderIntent) -> None:
        if self.down:
            raise ConnectionError("venue unreachable")
        await super().submit(intent)


def test_breaker_opens_after_venue_failures_halts_and_closes_after_cooldown(store, tmp_path, sessions, batches):
    config = TradebookConfig(risk=RiskConfig(breaker_failures=3, breaker_cooldown_s=30.0))
    venue = FlakyVenue.from_store(store, [BTC], tmp_path / "state" / "paper")
    s = start(store, tmp_path, sessions, config=config, venue=venue)
    steps(s, batches, 0, 3)
    venue.down = True
    failed = [s.submit(signal(f"fail-{i}"))[0] for i in range(3)]
    assert [(str(o.status), o.reason) for o in failed] == [("rejected", "venue error: venue unreachable")] * 3
    status = s.status()
    assert (status["breaker"], status["kill_switch"]) == ("open", "halted")
    trip = ("repeated venue failures: paper failed 3 consecutive calls (last: venue error: venue unreachable)")
    assert s.kill_switch.reason == trip
    [refused] = s.submit(signal("while-open"))
    assert refused.reason == f"circuit breaker open after repeated venue failures (paper): {trip}"

    venue.down = False
    steps(s, batches, 3, 3 + 31)  # the cool-down passes in session time
    [halted] = s.submit(signal("after-cooldown"))
    assert halted.reason == f"risk kill_switch: kill switch halted: {trip}"  # a person resumes trading, not a timer
    s.resume_trading("venue back")
    [trial] = s.submit(signal("trial"))
    assert str(trial.status) == "submitted" and s.status()["breaker"] == "closed"
    steps(s, batches, 34, 36)
    assert str(s.oms.order(trial.client_order_id).status) == "filled"
    assert [str(t.to_state) for t in s.breaker.transitions] == ["open", "half_open", "closed"]


def test_twap_releases_five_children_sixty_seconds_apart(store, tmp_path, sessions, batches, frames):
    quotes, _ = frames[BTC]
    # ADV 10 BTC: 0.5 BTC is 5 % of it (> 1 %: TWAP); each 0.1 slice is 1 % (>= 0.1 %: improve on the touch)
    s = start(store, tmp_path, sessions, adv={BTC: Decimal("10")})
    steps(s, batches, 0, 3)
    t0 = batches[2].end_ns - 1
    [first] = s.submit(signal("twap", strength=0.5, quantity="0.5"))
    assert "twap over 5 slices (0.10000, 0.10000, 0.10000, 0.10000, 0.10000)" in s.decisions_frame().iloc[-1]["reason"]
    assert s.scheduled()[["intent_id", "release_ts_ns", "quantity"]].values.tolist() == \
        [[f"nb:twap:slice:{i}", t0 + (i - 1) * 60 * SECOND, Decimal("0.10000")] for i in range(2, 6)]
    steps(s, batches, 3, 3 + 4 * 60)
    every = s.orders().sort_values("ts_init_ns")
    children = every[~every["intent_id"].str.contains(":retry:")]  # unfilled slices are retried (next test)
    assert children["intent_id"].tolist() == [f"nb:twap:slice:{i}" for i in range(1, 6)]
    assert children["ts_init_ns"].tolist() == [t0 + i * 60 * SECOND for i in range(5)]
    assert set(children["quantity"]) == {Decimal("0.1")} and set(children["order_type"]) == {"limit"}
    assert set(children["parent_id"]) == {"nb:twap"} and s.scheduled().empty
    for row in children.itertuples():  # each priced at its release: bid + 1 bp of mid (+ volatility), below the ask
        quote = quote_at(quotes, row.ts_init_ns)
        bid, ask = dec(quote["bid_px"]), dec(quote["ask_px"])
        assert bid <= row.limit_price < ask
    assert first.intent.intent_id == "nb:twap:slice:1"


def test_vwap_slices_follow_the_volume_profile(store, tmp_path, sessions, batches):
    t0 = batches[2].end_ns - 1
    minute = pd.Timestamp(t0, unit="ns", tz="UTC")
    first = minute.hour * 60 + minute.minute
    profile = pd.Series([1.0, 2.0, 3.0, 2.0, 2.0], index=[(first + i) % 1440 for i in range(5)])
    s = start(store, tmp_path, sessions, adv={BTC: Decimal("10")}, volume_profiles={BTC: profile})
    steps(s, batches, 0, 3)
    # 0.11 BTC is 1.1 % of ADV, just over the 1 % threshold: the shortest VWAP, 5 minutes, one slice a minute;
    # shares 0.1/0.2/0.3/0.2/0.2 of 11,000 lots of 0.00001
    s.submit(signal("vwap", strength=0.5, quantity="0.11"))
    assert "vwap over 5 slices" in s.decisions_frame().iloc[-1]["reason"]
    steps(s, batches, 3, 3 + 4 * 60)
    every = s.orders().sort_values("ts_init_ns")
    children = every[~every["intent_id"].str.contains(":retry:")]
    assert children[["intent_id", "quantity", "ts_init_ns"]].values.tolist() == [
        [f"nb:vwap:slice:{i + 1}", Decimal(q), t0 + i * 60 * SECOND]
        for i, q in enumerate(["0.011", "0.022", "0.033", "0.022", "0.022"])]


def thin_book_moments(frames, batches, threshold: Decimal) -> tuple[int, int]:
    """(the first batch starting 3 s in a row whose last ask is thinner than ``threshold``, the next thicker one)."""
    quotes, _ = frames[BTC]
    notional = [dec(quote_at(quotes, b.end_ns - 1)["ask_px"]) * dec(quote_at(quotes, b.end_ns - 1)["ask_sz"])
                for b in batches[:200]]
    thin = next(i for i in range(5, 200) if all(n < threshold for n in notional[i:i + 3]))
    return thin, next(j for j in range(thin, 200) if notional[j] >= threshold)


def test_thin_book_defers_until_the_book_fills_in(store, tmp_path, sessions, batches, frames):
    threshold = Decimal(30_000)  # USDT at the ask: about 0.5 BTC
    thin, thick = thin_book_moments(frames, batches, threshold)
    assert thick > thin + 2  # the data has a few thin seconds in a row: the deferral waits through them
    config = TradebookConfig(risk=RiskConfig(min_touch_notional=threshold))
    s = start(store, tmp_path, sessions, config=config)
    steps(s, batches, 0, thin + 1)
    assert s.submit(signal("thin")) == []
    decision = s.decisions_frame().iloc[-1]
    assert decision["outcome"] == "deferred" and "thin book on BTCUSDT.BINANCE" in decision["reason"]
    assert s.status()["deferred"] == 1 and s.orders().empty
    steps(s, batches, thin + 1, thick)
    assert s.orders().empty
    steps(s, batches, thick, thick + 1)
    [row] = s.orders().to_dict("records")
    assert (row["intent_id"], row["ts_init_ns"]) == ("nb:thin", batches[thick].end_ns - 1)
    assert s.status()["deferred"] == 0


def test_an_order_deferred_too_long_is_rejected_with_the_reason(store, tmp_path, sessions, batches):
    s = start(store, tmp_path, sessions, config=TradebookConfig(risk=RiskConfig(min_touch_notional=Decimal("1e9"))))
    steps(s, batches, 0, 3)
    assert s.submit(signal("never")) == []
    steps(s, batches, 3, 3 + 30)
    assert s.orders().empty
    steps(s, batches, 33, 34)
    [row] = s.orders().to_dict("records")
    assert (row["status"], row["reason"]) == ("rejected", "deferred for 30 steps: the spread or book never allowed it")


def ibm_batches(frames) -> list[FeedBatch]:
    quotes, trades = frames[IBM]
    window = (quotes["ts_ns"] >= IBM_PREMARKET) & (quotes["ts_ns"] < IBM_PREMARKET + SECOND)
    return list(ReplayFeed({IBM: quotes[window]}, start_ns=IBM_PREMARKET, end_ns=IBM_PREMARKET + SECOND).batches())


def test_equity_signal_outside_regular_hours_needs_extended_hours(store, tmp_path, sessions, frames):
    [batch] = ibm_batches(frames)
    regular = start(store, tmp_path, sessions, "regular", calibrations=[IBM])
    regular.step(batch)
    assert regular.submit(signal("pre", instrument=IBM, quantity="10")) == []
    decision = regular.decisions_frame().iloc[-1]
    assert (decision["outcome"], decision["reason"]) == (
        "rejected", "market hours: IBM.XNYS is not trading at 2013-10-07T12:00:00.999999999Z "
                    "(exchange calendar XNYS; extended hours off)")
    assert regular.orders().empty

    # a second session (its own state) on the same store, with extended hours on
    extended = start(store, tmp_path, sessions, "extended", calibrations=[IBM],
                     config=TradebookConfig(session=SessionConfig(extended_hours=True)))
    extended.step(batch)
    [order] = extended.submit(signal("pre", instrument=IBM, quantity="10"))
    assert (str(order.status), order.intent.quantity, order.intent.order_type) == \
        ("submitted", Decimal(10), OrderType.MARKET)
    regular.stop()
    extended.stop()
    assert oms_journal_name(store.path, tmp_path / "regular") == "regular/oms.journal"
    stored = store.query("SELECT journal, position FROM journal_offsets ORDER BY journal")
    assert stored["journal"].tolist() == ["extended/oms.journal"]  # the refused signal wrote no order
    assert store.orders()["client_order_id"].tolist() == [order.client_order_id]


# -- done when 4: bad input refused with a clear error, nothing stored ---------------------------
def footprint(store: Store, state: Path) -> dict[str, int]:
    counts = {t: int(store.query(f"SELECT count(*) AS n FROM {t}")["n"].iloc[0])
              for t in ("orders", "order_events", "fills", "positions", "alerts")}
    # records, not bytes: an open journal reserves space ahead of its records (a constant file size)
    files = {p.relative_to(state).as_posix(): p.read_bytes().rstrip(b"\0").count(b"\n")
             for p in state.rglob("*.journal")}
    return {**counts, **files}


def test_bad_input_is_refused_with_a_clear_error_and_nothing_stored(store, tmp_path, sessions, batches, frames):
    s = start(store, tmp_path, sessions)
    steps(s, batches, 0, 3)
    s.submit(signal("ok"))  # something on the books, so "nothing stored" is not trivially true
    steps(s, batches, 3, 5)
    s.oms.flush()
    now = batches[4].end_ns - 1
    before = footprint(store, tmp_path / "state")
    limit = OrderIntent("nb:off-tick", "nb", "paper", BTC, Side.BUY, Decimal("0.01"), OrderType.LIMIT,
                        TimeInForce.GTC, now, limit_price=Decimal("61000.005"))
    bad = {
        "nan size": (signal("nan", quantity="NaN"), OrderError, "quantity is NaN; expected a positive finite Decimal"),
        "negative size": (signal("neg", quantity="-0.01"), OrderError,
                          "quantity is -0.01; expected a positive finite Decimal"),
        "float size": (Signal("nb", "float", BTC, Side.BUY, None, strength=0.95, quantity=float("nan")), OrderError,
                       "quantity is nan; expected a Decimal"),
        "off-lot size": (signal("lot", quantity="0.000001"), ConformanceError, "0.000001"),
        "strength": (signal("strong", strength=1.5), OrderError, "strength is 1.5; expected a number in [0, 1]"),
        "unknown instrument": (signal("x", instrument="NOPE.XNAS"), UnknownInstrumentError,
                               "'NOPE.XNAS' is not traded in this session: expected one of ['BTCUSDT.BINANCE']"),
        "uncalibrated instrument": (signal("ibm", instrument=IBM, quantity="1"), UnknownInstrumentError,
                                    "'IBM.XNYS' is not traded in this session"),
        "limit off the tick": (limit, ConformanceError, "61000.005"),
        "stop off the tick": (signal("stop", strength=0.5, stop_loss=Decimal("50000.001")), ConformanceError,
                              "50000.001"),
        "missing Kelly stats": (signal("kelly", quantity=None, win_rate=0.6), OrderError,
                                "Half-Kelly sizing needs win_rate, avg_win and avg_loss; missing avg_win, avg_loss"),
    }
    for name, (item, error, text) in bad.items():
        with pytest.raises(error) as info:
            s.submit(item)
        assert text in str(info.value), (name, str(info.value))

    # no quote for 10 s, then a crossed one: no reference to price an order against
    s.step(FeedBatch(batches[5].start_ns, batches[5].start_ns + 10 * SECOND))
    quotes, _ = frames[BTC]
    age = (batches[5].start_ns + 10 * SECOND - 1 - int(quote_at(quotes, batches[5].start_ns)["ts_ns"])) / SECOND
    with pytest.raises(DataError, match=rf"stale or crossed quote: the last BTCUSDT.BINANCE quote is {age:.3f} s old "
                                        r"at .*; expected at most risk.max_quote_age_ms 5000 ms"):
        s.submit(signal("stale"))
    t = batches[5].start_ns + 10 * SECOND
    s.step(FeedBatch(t, t + SECOND, {BTC: QuoteArrays(np.array([t + 1], np.int64), np.array([61900.0]),
                                                      np.array([61800.0]), np.array([1.0]), np.array([1.0]))}))
    with pytest.raises(DataError, match=r"stale or crossed quote: the last BTCUSDT.BINANCE quote \(.*\) is crossed: "
                                        r"bid 61900.0 / ask 61800.0; expected bid < ask"):
        s.submit(signal("crossed"))
    with pytest.raises(DataError, match="is crossed"):
        s.submit(OrderIntent("nb:crossed-intent", "nb", "paper", BTC, Side.BUY, Decimal("0.01"), OrderType.MARKET,
                             TimeInForce.IOC, now))
    s.oms.flush()
    after = footprint(store, tmp_path / "state")
    session_journal = "session.journal"
    grown = {k: (before[k], after[k]) for k in before if before[k] != after[k] and k != session_journal}
    assert grown == {}, grown
    assert s.decisions_frame()["signal_id"].tolist() == ["ok"]  # no decision recorded for refused input


def test_a_strategy_signal_with_bad_input_is_recorded_not_fatal(store, tmp_path, sessions, batches):
    def strategy(batch, view):
        if batch.start_ns == batches[3].start_ns:
            yield signal("bad", quantity="-1")
            yield signal("good")

    s = start(store, tmp_path, sessions, strategy=strategy)
    steps(s, batches, 0, 5)
    decisions = s.decisions_frame()
    assert decisions[["signal_id", "outcome"]].values.tolist() == [["bad", "rejected"], ["good", "sent"]]
    assert decisions["reason"].iloc[0] == ("OrderError: signal nb:bad: quantity is -1; "
                                           "expected a positive finite Decimal")
    assert s.status()["state"] == "running"


def test_invalid_configuration_and_session_arguments_are_refused_before_anything_is_written(store, tmp_path):
    before = footprint(store, tmp_path)
    config_file = tmp_path / "tradebook.yaml"
    config_file.write_text("risk:\n  max_spread_bps: -5\n")
    with pytest.raises(ConfigError, match=rf"risk.max_spread_bps = -5 \(in {config_file}, line 2\): expected a number > 0"):
        load_config(config_file, env={})
    with pytest.raises(ConfigError, match=r"risk.daily_loss_limit = 'lots' \(from TRADEBOOK_RISK__DAILY_LOSS_LIMIT\)"):
        load_config(None, env={"TRADEBOOK_RISK__DAILY_LOSS_LIMIT": "lots"})
    with pytest.raises(ConfigError, match="unknown key 'risk.max_sprd_bps'"):
        config_file.write_text("risk:\n  max_sprd_bps: 5\n")
        load_config(config_file, env={})
    state = tmp_path / "never"
    refused = {
        "live mode": dict(config=load_config(None, env={"TRADEBOOK_SESSION__MODE": "live",
                                                        "TRADEBOOK_VENUES__ALPACA__ENABLED": "true"})),
        "not a config": dict(config={"risk": {}}),
        "NaN cash": dict(starting_cash=Decimal("NaN")),
        "negative cash": dict(starting_cash=Decimal("-1")),
        "negative ADV": dict(adv={BTC: Decimal("-5")}),
        "no calibration": dict(calibrations=[]),
    }
    messages = {}
    for name, kwargs in refused.items():
        kwargs = {"calibrations": [BTC], **kwargs}
        with pytest.raises(TradebookError) as info:
            Session(store, state_dir=state, **kwargs)
        messages[name] = str(info.value)
        assert not state.exists(), name
    assert "session.mode is 'live'" in messages["live mode"]
    assert "config must be a TradebookConfig" in messages["not a config"]
    assert messages["NaN cash"] == "starting_cash is Decimal('NaN'); expected a finite Decimal >= 0"
    assert messages["negative ADV"] == "adv['BTCUSDT.BINANCE'] is Decimal('-5'); expected a positive finite number"
    assert "needs calibrations" in messages["no calibration"]
    with pytest.raises(TradebookError, match="no calibration 'ETHUSDT.BINANCE'"):
        Session(store, calibrations=["ETHUSDT.BINANCE"], state_dir=state)
    assert not state.exists()
    assert footprint(store, tmp_path) == before


# -- retries of algo slices -------------------------------------------------------------------
def flat_batches(start_ns: int, seconds: int, bid: str = "60000.00", ask: str = "60000.50") -> list[FeedBatch]:
    """A quiet market: one quote a second, no trades, so a resting order never fills by the trade rule."""
    out = []
    for i in range(seconds):
        ts = np.array([start_ns + i * SECOND], dtype=np.int64)
        quotes = QuoteArrays(ts, np.array([float(bid)]), np.array([float(ask)]), np.array([5.0]), np.array([5.0]))
        out.append(FeedBatch(start_ns + i * SECOND, start_ns + (i + 1) * SECOND, {BTC: quotes}))
    return out


def test_an_unfilled_slice_is_cancelled_and_retried_one_tick_more_aggressive(store, tmp_path, sessions, batches):
    s = start(store, tmp_path, sessions, adv={BTC: Decimal("10")})
    quiet = flat_batches(batches[0].start_ns, 200)
    steps(s, quiet, 0, 3)
    s.submit(signal("rt", strength=0.5, quantity="0.5"))  # 5 % of ADV: TWAP of 5 x 0.1, 60 s apart
    first = s.oms.order_for_intent("nb:rt:slice:1")
    assert first.intent.limit_price == Decimal("60000.49")  # improve: bid + offset, capped one tick under the ask
    steps(s, quiet, 3, 3 + 61)  # a minute without a fill: the slice is cancelled, then retried
    assert str(s.oms.order(first.client_order_id).status) == "cancelled"
    retried = s.oms.order_for_intent("nb:rt:slice:1:retry:1")
    assert retried.intent.limit_price == Decimal("60000.50")  # one tick more aggressive: now at the ask
    steps(s, quiet, 64, 70)
    retried = s.oms.order(retried.client_order_id)
    assert str(retried.status) == "filled" and retried.avg_price == Decimal("60000.50")


class SliceRejectingVenue(PaperVenue):
    """A venue that refuses every algo slice (as a broker would refuse an order type it does not take)."""

    async def submit(self, intent: OrderIntent) -> None:
        if ":slice:" in intent.intent_id:
            raise ConnectionError("order refused by the venue")
        await super().submit(intent)


def test_a_slice_rejected_three_more_times_is_escalated_with_an_alert(store, tmp_path, sessions, batches):
    venue = SliceRejectingVenue.from_store(store, [BTC], tmp_path / "state" / "paper")
    config = TradebookConfig(risk=RiskConfig(breaker_failures=10))
    s = start(store, tmp_path, sessions, adv={BTC: Decimal("10")}, venue=venue, config=config)
    quiet = flat_batches(batches[0].start_ns, 20)
    steps(s, quiet, 0, 3)
    s.submit(signal("esc", strength=0.5, quantity="0.5"))
    steps(s, quiet, 3, 8)
    ids = s.orders().sort_values("ts_init_ns")["intent_id"].tolist()
    assert ids == ["nb:esc:slice:1"] + [f"nb:esc:slice:1:retry:{n}" for n in (1, 2, 3)]
    assert set(s.orders()["status"]) == {"rejected"}
    [alert] = [a for a in s.alerts if a.kind == "escalation"]
    assert alert.message.startswith("nb:esc:slice:1: rejected after 3 retries") and "0.1" in alert.message


def test_a_restart_releases_the_slices_still_due_and_keeps_watching_the_sent_ones(store, tmp_path, sessions,
                                                                                  batches):
    quiet = flat_batches(batches[0].start_ns, 400)
    s = start(store, tmp_path, sessions, adv={BTC: Decimal("10")})
    steps(s, quiet, 0, 3)
    s.submit(signal("rs", strength=0.5, quantity="0.5"))  # TWAP: 5 slices of 0.1, 60 s apart
    steps(s, quiet, 3, 3 + 70)  # slice 1 cancelled and retried; slice 2 out
    before = set(s.orders()["intent_id"])
    assert {"nb:rs:slice:1", "nb:rs:slice:1:retry:1", "nb:rs:slice:2"} <= before
    s.stop()  # as good as a crash for the in-memory schedule: only the journals remain
    again = start(store, tmp_path, sessions, adv={BTC: Decimal("10")})
    assert sorted(again.scheduled()["intent_id"]) == [f"nb:rs:slice:{i}" for i in (3, 4, 5)]
    steps(again, quiet, 73, 73 + 4 * 60)
    ids = set(again.orders()["intent_id"])
    assert {f"nb:rs:slice:{i}" for i in range(1, 6)} <= ids  # every slice went, none twice (ids are unique)
    assert "nb:rs:slice:2:retry:1" in ids  # slice 2, sent before the restart, was still watched and retried
    filled = again.orders()[again.orders()["status"] == "filled"]
    assert filled["filled_qty"].sum() == Decimal("0.5")  # the whole parent, once
