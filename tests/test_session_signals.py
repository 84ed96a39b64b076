"""Signals a notebook or strategy hands a session: ids that protect the user, times checked against
session time, floats taken where they are unambiguous, numbers with stated bounds, and algo slices
that follow their parent. Real store, recorded BTCUSDT quotes, a stored calibration (the fixtures of
tests/test_session.py), driven one 1 s batch at a time with :meth:`Session.step`.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from test_session import (  # noqa: F401 - fixtures
    BTC,
    SECOND,
    batches,
    flat_batches,
    footprint,
    frames,
    sessions,
    signal,
    start,
    steps,
    store,
    template,
)

from tradebook.config import SessionConfig, TradebookConfig
from tradebook.errors import ConformanceError, OrderError
from tradebook.model.instruments import Side
from tradebook.execution.oms import RejectCode
from tradebook.model.orders import OrderIntent, OrderType, Signal, TimeInForce
from tradebook.session import DecisionCode, DecisionOutcome
from tradebook.venues.paper import PaperVenue


def last_decision(session) -> dict:
    return session.decisions_frame().iloc[-1].to_dict()


def one_order_flushed(store, tmp_path, sessions, batches):
    """A session five steps in with one order sent and flushed: (session, session time, the store's footprint)."""
    s = start(store, tmp_path, sessions)
    steps(s, batches, 0, 3)
    s.submit(signal("ok"))
    steps(s, batches, 3, 5)
    s.oms.flush()
    return s, batches[4].end_ns - 1, footprint(store, tmp_path / "state")


# -- one id, one signal -----------------------------------------------------------------------
def test_same_id_same_terms_is_a_rerun_and_other_terms_are_refused_naming_both(store, tmp_path, sessions, batches):
    s = start(store, tmp_path, sessions)
    steps(s, batches, 0, 3)
    [first] = s.submit(signal("sig-1", "buy", quantity="0.01"))
    assert last_decision(s)["code"] == DecisionCode.ROUTED
    # the same cell run again (a float 0.01 is the same quantity): the earlier order, nothing sent
    again = s.submit(Signal("nb", "sig-1", BTC, Side.BUY, None, strength=0.95, quantity=0.01))
    assert [o.client_order_id for o in again] == [first.client_order_id]
    assert len(s.orders()) == 1
    # the cell edited to SELL 0.5 and run again: refused, naming what was decided and what came now
    with pytest.raises(OrderError) as info:
        s.submit(signal("sig-1", "sell", quantity="0.5"))
    message = str(info.value)
    assert message.startswith("signal nb:sig-1 was decided before as [buy BTCUSDT.BINANCE quantity=0.01 "
                              "strength=0.95 ")
    assert "this one is [sell BTCUSDT.BINANCE quantity=0.5 strength=0.95 " in message
    assert "a new signal_id for a changed signal" in message
    assert len(s.orders()) == 1  # nothing sent
    decision = last_decision(s)
    assert (decision["outcome"], decision["code"]) == (DecisionOutcome.REJECTED, DecisionCode.SIGNAL_ID_CONFLICT)
    # a changed strength alone is another signal too
    with pytest.raises(OrderError, match=r"strength=0.95 .*this one is \[buy .* strength=0.5 "):
        s.submit(signal("sig-1", "buy", quantity="0.01", strength=0.5))


def test_the_id_check_survives_a_restart(store, tmp_path, sessions, batches):
    s = start(store, tmp_path, sessions)
    steps(s, batches, 0, 3)
    [first] = s.submit(signal("sig-1", "buy", quantity="0.01"))
    s.submit(signal("weak", quantity=None, strength=0.5, win_rate=0.4, avg_win=0.01, avg_loss=0.01))  # no order
    assert last_decision(s)["code"] == DecisionCode.SIZED_TO_NOTHING
    s.stop()
    again = start(store, tmp_path, sessions)
    steps(again, batches, 3, 5)
    assert [o.client_order_id for o in again.submit(signal("sig-1", "buy", quantity="0.01"))] == \
        [first.client_order_id]
    with pytest.raises(OrderError, match=r"decided before as \[buy .*quantity=0.01 .*this one is \[sell .*"
                                         r"quantity=0.5 "):
        again.submit(signal("sig-1", "sell", quantity="0.5"))
    # a signal that made no order is held to its terms as well
    with pytest.raises(OrderError, match=r"nb:weak was decided before as \[buy .*win_rate=0.4 .*win_rate=0.6 "):
        again.submit(signal("weak", quantity=None, strength=0.5, win_rate=0.6, avg_win=0.01, avg_loss=0.01))
    assert again.submit(signal("weak", quantity=None, strength=0.5, win_rate=0.4, avg_win=0.01,
                               avg_loss=0.01)) == []
    assert len(again.orders()) == 1


def test_a_strategy_reusing_an_id_for_another_signal_gets_a_conflict_decision(store, tmp_path, sessions, batches):
    def strategy(batch, view):
        if batch.start_ns == batches[3].start_ns:
            yield Signal("algo", "s1", BTC, Side.BUY, view.now_ns, strength=0.95, quantity=Decimal("0.01"))
        if batch.start_ns == batches[4].start_ns:
            yield Signal("algo", "s1", BTC, Side.SELL, view.now_ns, strength=0.95, quantity=Decimal("0.01"))

    s = start(store, tmp_path, sessions, strategy=strategy)
    steps(s, batches, 0, 6)
    decisions = s.decisions_frame()
    assert decisions[["signal_id", "outcome", "code"]].values.tolist() == [
        ["s1", "sent", "routed"], ["s1", "rejected", "signal_id_conflict"]]
    assert "decided before as [buy" in decisions["reason"].iloc[1]
    assert len(s.orders()) == 1 and s.status()["state"] == "running"


# -- time and types -----------------------------------------------------------------------------
def test_a_signal_from_the_future_or_too_old_is_refused_with_the_reason(store, tmp_path, sessions, batches):
    config = TradebookConfig(session=SessionConfig(max_signal_age_s=60))
    s = start(store, tmp_path, sessions, config=config)
    steps(s, batches, 0, 3)
    now = batches[2].end_ns - 1
    before = footprint(store, tmp_path / "state")
    future = Signal("nb", "future", BTC, Side.BUY, now + 5 * SECOND, strength=0.95, quantity=Decimal("0.01"))
    with pytest.raises(OrderError, match=r"signal nb:future: signal time .* is after session time .* \(by 5.000 s\); "
                                         r"expected a signal at or before session time"):
        s.submit(future)
    old = Signal("nb", "old", BTC, Side.BUY, now - 61 * SECOND, strength=0.95, quantity=Decimal("0.01"))
    with pytest.raises(OrderError, match=r"signal nb:old: signal time .* is 61.000 s before session time .*; "
                                         r"expected at most session.max_signal_age_s 60.0 s"):
        s.submit(old)
    with pytest.raises(OrderError, match=r"ts_ns is '2024-08-08T23:56:00Z'; expected int nanoseconds"):
        s.submit(Signal("nb", "str", BTC, Side.BUY, "2024-08-08T23:56:00Z", quantity=Decimal("0.01")))
    for bad in (True, 1.7e18):
        with pytest.raises(OrderError, match="ts_ns is .*; expected int nanoseconds"):
            s.submit(Signal("nb", "typed", BTC, Side.BUY, bad, quantity=Decimal("0.01")))
    with pytest.raises(OrderError, match=r"win_rate is '0.6'; expected a finite number or None"):
        s.submit(Signal("nb", "wr", BTC, Side.BUY, now, win_rate="0.6", avg_win=0.01, avg_loss=0.01))
    with pytest.raises(OrderError, match=r"urgency is 'asap'; expected 'low', 'normal' or 'high'"):
        s.submit(Signal("nb", "urg", BTC, Side.BUY, now, quantity=Decimal("0.01"), urgency="asap"))
    with pytest.raises(OrderError, match=r"instrument_id is 42; expected an instrument id string"):
        s.submit(Signal("nb", "inst", 42, Side.BUY, now, quantity=Decimal("0.01")))
    assert footprint(store, tmp_path / "state") == before
    # at session time (or None: stamped with it), it goes
    assert s.submit(Signal("nb", "now", BTC, Side.BUY, now, strength=0.95, quantity=Decimal("0.01")))


def test_a_strategy_signal_out_of_time_is_a_rejected_decision(store, tmp_path, sessions, batches):
    def strategy(batch, view):
        if batch.start_ns == batches[3].start_ns:
            yield Signal("algo", "late", BTC, Side.BUY, view.now_ns - 3600 * SECOND, strength=0.95,
                         quantity=Decimal("0.01"))
            yield Signal("algo", "ahead", BTC, Side.BUY, view.now_ns + 3600 * SECOND, strength=0.95,
                         quantity=Decimal("0.01"))

    s = start(store, tmp_path, sessions, strategy=strategy)
    steps(s, batches, 0, 5)
    decisions = s.decisions_frame()
    assert decisions[["signal_id", "outcome", "code"]].values.tolist() == [
        ["late", "rejected", "signal_too_old"], ["ahead", "rejected", "signal_from_future"]]
    assert "expected at most session.max_signal_age_s 300.0 s" in decisions["reason"].iloc[0]
    assert s.orders().empty


# -- floats where unambiguous, bounds on every number ---------------------------------------------
def test_float_quantity_and_stop_are_taken_by_their_repr_and_held_to_the_lot(store, tmp_path, sessions, batches):
    s = start(store, tmp_path, sessions)
    steps(s, batches, 0, 3)
    [order] = s.submit(Signal("nb", "f", BTC, Side.BUY, None, strength=0.95, quantity=0.01))
    assert str(order.intent.quantity) == "0.01000"  # the lot's places, not 0.01000000000000000020816681711721685
    with pytest.raises(ConformanceError, match=r"quantity 0.000001 is not a multiple of the lot size 0.00001"):
        s.submit(Signal("nb", "off-lot", BTC, Side.BUY, None, strength=0.95, quantity=0.000001))
    with pytest.raises(OrderError, match=r"quantity is inf; expected a Decimal \(or float\) that is positive"):
        s.submit(Signal("nb", "inf", BTC, Side.BUY, None, strength=0.95, quantity=float("inf")))
    with pytest.raises(ConformanceError, match=r"stop_loss must be finite, got nan"):
        s.submit(Signal("nb", "nan-stop", BTC, Side.BUY, None, strength=0.5, quantity=0.01, stop_loss=float("nan")))
    with pytest.raises(OrderError, match=r"side is 'hold'; expected Side.BUY or Side.SELL \('buy' or 'sell'\)"):
        s.submit(Signal("nb", "hold", BTC, "hold", None, strength=0.95, quantity=0.01))
    assert len(s.orders()) == 1
    [typed] = s.submit(Signal("nb", "text", BTC, "buy", None, strength=0.95, quantity=0.01))  # the side as text
    assert typed.intent.side is Side.BUY


def test_numbers_beyond_the_stored_bounds_are_refused_and_nothing_is_stored(store, tmp_path, sessions, batches):
    s, now, before = one_order_flushed(store, tmp_path, sessions, batches)
    bounds = r"is out of bounds: expected a number below 1E\+26 in absolute value \(stored as DECIMAL\(38, 12\)"

    def intent(name: str, **kw) -> OrderIntent:
        fields = dict(quantity=Decimal("0.01"), order_type=OrderType.LIMIT, limit_price=Decimal("61000"))
        fields.update(kw)
        return OrderIntent(f"nb:{name}", "nb", "paper", BTC, Side.BUY, fields.pop("quantity"),
                           fields.pop("order_type"), TimeInForce.GTC, now, **fields)

    cases = {
        "signal quantity 1E+30": (signal("huge", quantity="1E+30"), ConformanceError, "quantity 1E[+]30 " + bounds),
        "signal quantity 1e300 float": (Signal("nb", "huge-f", BTC, Side.BUY, None, quantity=1e300),
                                        ConformanceError, "quantity 1E[+]300 " + bounds),
        "signal stop 1E+400": (signal("stop", strength=0.5, stop_loss=Decimal("1E+400")), ConformanceError,
                               "stop_loss 1E[+]400 " + bounds),
        "intent limit 1E+400": (intent("lim", limit_price=Decimal("1E+400")), ConformanceError,
                                "price 1E[+]400 " + bounds),
        "intent quantity 1E+30": (intent("qty", quantity=Decimal("1E+30")), ConformanceError,
                                  r"quantity 1E\+30 is out of bounds: expected a number below 1E\+23 in absolute value "
                                  r"\(on the 0.00001 grid, exact to 28 digits; stored as DECIMAL\(38, 12\)"),
        "intent quantity 1E+23": (intent("qty23", quantity=Decimal("1E+23")), ConformanceError,
                                  r"quantity 1E\+23 is out of bounds: expected a number below 1E\+23"),
        "intent limit NaN": (intent("nan", limit_price=Decimal("NaN")), ConformanceError, "price must be finite"),
        "intent limit inf float": (intent("inf", limit_price=float("inf")), OrderError, "limit_price"),
        "intent limit 1E-400": (intent("tiny", limit_price=Decimal("1E-400")), ConformanceError,
                                "not a multiple of the tick"),
    }
    for name, (item, error, pattern) in cases.items():
        with pytest.raises(error, match=pattern):
            s.submit(item)
    s.oms.flush()
    after = footprint(store, tmp_path / "state")
    assert {k: (before[k], after[k]) for k in before if before[k] != after[k]} == {}
    # a float limit on an intent is taken by its repr, then held to the tick
    [order] = s.submit(intent("float-limit", limit_price=61000.5))
    assert order.intent.limit_price == Decimal("61000.5")
    with pytest.raises(ConformanceError, match=r"price 61000.005 is not a multiple of the tick"):
        s.submit(intent("float-off-tick", limit_price=61000.005))


# -- algo slices follow their parent --------------------------------------------------------------
def test_a_twap_whose_first_slice_is_refused_cancels_its_other_slices(store, tmp_path, sessions, batches):
    quiet = flat_batches(batches[0].start_ns, 400)
    s = start(store, tmp_path, sessions, adv={BTC: Decimal("10")})
    steps(s, quiet, 0, 3)
    s.halt("desk closed")
    assert s.submit(signal("tw", strength=0.5, quantity="0.5"))[0].intent.intent_id == "nb:tw:slice:1"
    [slice1] = s.orders()["status"].tolist()
    assert slice1 == "rejected"
    assert s.scheduled().empty  # the four other slices are cancelled, not queued behind the refusal
    [parent] = s.parents().to_dict("records")
    assert (parent["parent_id"], parent["status"], parent["slices_scheduled"]) == ("nb:tw", "stopped", 0)
    assert parent["reason"] == ("slice nb:tw:slice:1 refused (risk kill_switch: kill switch halted: desk closed); "
                                "4 slice(s) not yet released cancelled (0.40000 undone)")
    decisions = s.decisions_frame()
    assert decisions[["signal_id", "outcome", "code"]].values.tolist() == [
        ["tw", "rejected", "refused"], ["tw", "stopped", "slice_refused"]]
    assert [a.kind for a in s.alerts if a.kind == "algo_stopped"] == ["algo_stopped"]
    # the rule holds after a restart and after the halt is lifted: nothing more of this parent is sent
    s.stop()
    again = start(store, tmp_path, sessions, adv={BTC: Decimal("10")})
    assert again.scheduled().empty
    assert again.parents()[["parent_id", "status"]].values.tolist() == [["nb:tw", "stopped"]]
    again.resume_trading("desk open")
    steps(again, quiet, 3, 3 + 5 * 60)
    assert again.orders()["intent_id"].tolist() == ["nb:tw:slice:1"]


def test_a_later_slice_refused_cancels_the_slices_not_yet_released(store, tmp_path, sessions, batches):
    quiet = flat_batches(batches[0].start_ns, 400)
    s = start(store, tmp_path, sessions, adv={BTC: Decimal("10")})
    steps(s, quiet, 0, 3)
    s.submit(signal("tw", strength=0.5, quantity="0.5"))  # 5 slices of 0.1, 60 s apart
    steps(s, quiet, 3, 3 + 61)  # slice 2 released (slice 1 retried after a minute unfilled)
    assert s.parents()[["status", "slices_scheduled", "slices_working"]].values.tolist() == [["working", 3, 2]]
    s.halt("risk off")
    steps(s, quiet, 64, 64 + 60)  # slice 3 comes due: refused
    orders = s.orders().set_index("intent_id")
    assert orders.loc["nb:tw:slice:3", "status"] == "rejected"
    assert "nb:tw:slice:4" not in orders.index and "nb:tw:slice:5" not in orders.index
    [parent] = s.parents().to_dict("records")
    assert parent["status"] == "stopped" and parent["reason"].startswith(
        "slice nb:tw:slice:3 refused (risk kill_switch: kill switch halted: risk off); 2 slice(s) not yet released "
        "cancelled (0.20000 undone)")
    assert s.scheduled().empty


# -- an order made durable, killed before the venue received it -----------------------------------
class Killed(BaseException):
    """The process dying at this line (a BaseException, as a kill leaves no handler a chance)."""


class VenueKilledBeforeReceiving(PaperVenue):
    """The paper venue, with the process killed after the order manager made the orders durable and
    before this venue received them."""

    async def submit(self, intent: OrderIntent) -> None:
        raise Killed()

    async def submit_many(self, intents) -> None:
        raise Killed()


def test_an_order_that_never_reached_the_venue_is_decided_alerted_and_sent_again_under_a_new_id(
        store, tmp_path, sessions, batches):
    def strategy(batch, view):
        if batch.start_ns >= batches[3].start_ns:  # the same signal every step, as a strategy holding a view does
            yield Signal("algo", "s1", BTC, Side.BUY, view.now_ns, strength=0.95, quantity=Decimal("0.01"))

    venue = VenueKilledBeforeReceiving.from_store(store, [BTC], tmp_path / "state" / "paper")
    s = start(store, tmp_path, sessions, strategy=strategy, venue=venue)
    steps(s, batches, 0, 3)
    with pytest.raises(Killed):
        s.step(batches[3])  # the intent is durable as submitted; the venue never heard of it
    [lost] = s.orders()["client_order_id"].tolist()
    assert s.decisions_frame()[["signal_id", "outcome"]].values.tolist() == [["s1", "sent"]]
    s.stop()

    again = start(store, tmp_path, sessions, strategy=strategy)  # the real paper venue, on the same state
    order = again.oms.order(lost)
    assert str(order.status) == "rejected" and order.reason == "never reached the venue"
    assert again.oms.rejection_code(lost) is RejectCode.NEVER_REACHED_VENUE
    [alert] = [a for a in again.alerts if a.kind == "never_reached_venue"]
    assert alert.message.startswith(f"{lost} (algo:s1) was made durable but never reached")
    decision = last_decision(again)
    assert (decision["signal_id"], decision["outcome"], decision["code"], decision["client_order_ids"]) == \
        ("s1", DecisionOutcome.NOT_SENT, DecisionCode.NEVER_REACHED_VENUE, (lost,))
    assert decision["reason"].endswith("the same signal sent again goes as s1:resend:1")
    # the strategy's next step sends it again, under a new id; later steps send nothing more
    steps(again, batches, 4, 10)
    orders = again.orders().set_index("intent_id")
    assert orders["status"].to_dict() == {"algo:s1": "rejected", "algo:s1:resend:1": "filled"}
    assert orders.loc["algo:s1:resend:1", "client_order_id"] != lost
    assert again.decisions_frame()[["outcome", "code"]].values.tolist() == [
        ["sent", "routed"], ["not sent", "never_reached_venue"], ["sent", "routed"]]
    assert last_decision(again)["reason"].startswith("sent again as s1:resend:1 (its earlier order never reached")
    again.stop()
    # a third start neither decides it again nor resends
    third = start(store, tmp_path, sessions, strategy=strategy)
    steps(third, batches, 10, 12)
    assert len(third.orders()) == 2 and len(third.decisions_frame()) == 3


# -- a clean stop leaves in-flight orders as a restart would find them ------------------------------
@pytest.mark.parametrize("via", ["strategy", "submit"])
def test_a_market_order_in_flight_at_a_clean_stop_fills_after_the_restart_as_without_it(
        via, store, tmp_path, sessions, batches):
    def strategy(batch, view):
        if via == "strategy" and batch.start_ns == batches[3].start_ns:
            yield Signal("algo", "m1", BTC, Side.BUY, view.now_ns, strength=0.95, quantity=Decimal("0.01"))

    def run(name: str, restart: bool):
        s = start(store, tmp_path, sessions, name=name, strategy=strategy)
        steps(s, batches, 0, 4)
        if via == "submit":
            s.submit(signal("m1", quantity="0.01"))
        [coid] = s.orders()["client_order_id"].tolist()
        # received by the venue, not yet at its matching engine: it meets the next data
        assert str(s.oms.order(coid).status) in ("submitted", "accepted")
        if restart:
            s.stop()
            s = start(store, tmp_path, sessions, name=name, strategy=strategy)
        steps(s, batches, 4, 8)
        return s.oms.order(coid)

    straight = run("straight", restart=False)
    restarted = run("restarted", restart=True)
    assert str(straight.status) == "filled"
    assert (str(restarted.status), restarted.filled_qty, restarted.avg_price, restarted.fees) == \
        ("filled", straight.filled_qty, straight.avg_price, straight.fees)



def test_a_malformed_intent_is_an_order_error_and_nothing_is_stored(store, tmp_path, sessions, batches):
    s, now, before = one_order_flushed(store, tmp_path, sessions, batches)
    base = dict(intent_id="nb:x", strategy_id="nb", account_id="paper", instrument_id=BTC, side=Side.BUY,
                quantity=Decimal("0.01"), order_type=OrderType.MARKET, time_in_force=TimeInForce.IOC, ts_ns=now)
    cases = [("intent_id", 5, "intent_id is 5; expected a non-empty string"),
             ("instrument_id", ["x"], r"instrument_id is \['x'\]; expected a non-empty string"),
             ("strategy_id", None, "strategy_id is None"), ("account_id", 7, "account_id is 7"),
             ("parent_id", 3, "parent_id is 3; expected the parent's intent id"),
             ("reduce_only", "yes", "reduce_only is 'yes'; expected True or False"),
             ("side", "hold", "side is 'hold'; expected Side.BUY or Side.SELL"),
             ("order_type", "weird", "unknown order type 'weird'"), ("ts_ns", "now", "ts_ns must be int ns"),
             ("quantity", "0.01", "quantity '0.01' must be a positive finite Decimal")]
    for field, value, message in cases:
        fields = {**base, "intent_id": f"nb:{field}", field: value}
        with pytest.raises(OrderError, match=message):
            s.submit(OrderIntent(**fields))
    s.oms.flush()
    after = footprint(store, tmp_path / "state")
    assert {k: (before[k], after[k]) for k in before if before[k] != after[k]} == {}
    # a side typed as text is the Side it names
    [order] = s.submit(OrderIntent(**{**base, "intent_id": "nb:text-side", "side": "sell", "quantity": 0.01}))
    assert order.intent.side is Side.SELL and order.intent.quantity == Decimal("0.01")
