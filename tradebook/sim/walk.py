"""The whole model's taking of liquidity at an L1 quote: the L1-implied book walk, refill, price improvement.

The compiled primitives both faces of the simulator (:mod:`tradebook.sim.engine`,
:mod:`tradebook.sim.vectorized`) call when a model has a depth profile or a completion
model, under the matching rules written in :mod:`tradebook.sim.orders` (read them there):
:func:`walk_params` turns a fitted model into the ladder and refill an order walks,
:func:`walk_book` walks it at one quote, and :func:`fold_touch_unit` /
:func:`touch_unit_at` track the instrument's recent touch size that sizes the ladder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from tradebook.errors import ConfigError
from tradebook.model.instruments import Instrument
from tradebook.sim.orders import _splitmix64

# Chunk ends of the implied ladder: each chunk ends at least this many times further than the last one.
LADDER_CHUNK_GROWTH = 2.0
# The walk's draws (price improvement) hash on their own stream, apart from the latency draws' 0 and 1.
_WALK_STREAM = 2


@dataclass(frozen=True)
class WalkParams:
    """The calibrated book a marketable order walks at an L1 quote, as plain arrays for compiled code.

    Behind the quote's own touch (its price and size) lie ``offsets_ticks[j]`` ticks
    beyond the touch ``sizes[j]`` units (the instrument's quantity), the L1-implied
    depth. What an order takes is gone from that book for it until it refills at
    ``refill_per_ns`` units a nanosecond (``inf``: at the next quote); an order that
    has emptied it waits until ``refill_unit`` (or its remainder) is back. A take
    whose first part fills at the touch prints inside the spread with probability
    ``improve_share`` by ``improve_ratio`` half-spreads (at most to the mid, on the
    half-tick grid toward the touch), drawn per order and take from the seed.
    """

    offsets_ticks: np.ndarray  # float64, integers >= 1, non-decreasing
    sizes: np.ndarray  # float64 > 0, same length; times the recent touch size when unit_tau_ns > 0
    tick: float
    refill_per_ns: float
    refill_unit: float
    improve_share: float
    improve_ratio: float
    # > 0: ``sizes`` are multiples of the instrument's own recent touch size (exponential memory of
    # this many ns, :func:`tradebook.sim.depth.recent_touch_size`), tracked by both faces from the quotes
    # they see; 0: ``sizes`` are quantities (a depth profile of the earlier format)
    unit_tau_ns: int = 0

    @property
    def depth(self) -> float:
        """Size behind the touch the walk can reach at a fresh book (in recent touch sizes when ``unit_tau_ns``)."""
        return float(self.sizes.sum())

    def describe(self) -> str:
        """One line: what of the model the walk uses."""
        refill = ("at the next quote" if math.isinf(self.refill_per_ns)
                  else f"{self.refill_per_ns * 1e9:.4g} units/s, resumes at {self.refill_unit:.4g}")
        units = "recent touch sizes" if self.unit_tau_ns > 0 else "units"
        book = (f"L1-implied book walk ({len(self.sizes)} levels, {self.depth:.4g} {units} behind the touch, "
                f"{self.offsets_ticks[0]:.0f}-{self.offsets_ticks[-1]:.0f} ticks)" if len(self.sizes)
                else "the touch alone (no depth profile)")
        return (f"{book}, refill {refill}, price improvement {self.improve_share:.1%} by "
                f"{self.improve_ratio:.2f} half-spreads")


def implied_ladder(depth, instrument: Instrument) -> tuple[np.ndarray, np.ndarray]:
    """The adapter from a fitted depth profile to the engine's ladder: (offsets in ticks, sizes in units).

    The one place that reads a :class:`~tradebook.sim.depth.DepthProfile` for the engine.
    Its depth curve ``A(r)`` (the average distance beyond the touch, in ticks, of the
    first ``r`` size units behind it) is cut into chunks whose ends grow by
    ``LADDER_CHUNK_GROWTH``, up to the deepest remainder the fit saw (nothing is
    invented beyond it); each chunk sits at its marginal distance
    ``(r1 A(r1) - r0 A(r0)) / (r1 - r0)`` rounded to whole ticks (at least one,
    never falling). Sizes are the chunk's width in the profile's size unit: for a
    profile in units that carry (``touch_unit_tau_ns > 0``) the width itself, a
    multiple of the instrument's recent touch size that the engine tracks; for the
    earlier format, times its ``typical_top_size`` (the fit instrument's median touch).
    """
    grid = np.asarray(depth.remainder_grid, dtype=np.float64)
    ends = [grid[0]]
    for r in grid[1:]:
        if r >= ends[-1] * LADDER_CHUNK_GROWTH * (1 - 1e-12):
            ends.append(r)
    if ends[-1] < grid[-1]:
        ends.append(grid[-1])
    ends = np.asarray(ends)
    notional = ends * np.asarray(depth.avg_distance(ends), dtype=np.float64)
    widths = np.diff(np.concatenate([[0.0], ends]))
    marginal = np.diff(np.concatenate([[0.0], notional])) / widths
    offsets = np.maximum.accumulate(np.maximum(np.round(marginal), 1.0))
    if float(depth.tick_size) != float(instrument.tick_size):
        raise ConfigError(f"depth profile ticks are {depth.tick_size} wide, {instrument.instrument_id}'s "
                          f"{instrument.tick_size}; expected the profile applied to this instrument")
    scale = 1.0 if getattr(depth, "touch_unit_tau_ns", 0) > 0 else float(depth.typical_top_size)
    return offsets.astype(np.float64), (widths * scale).astype(np.float64)


def walk_params(model, instrument: Instrument) -> WalkParams | None:
    """What the whole model gives a marketable order (None: the cost curve prices, as for a touch-only model).

    A model with a depth profile walks its implied ladder; one with a completion model
    but no depth (an L1-only calibration) walks the touch alone and waits for refills.

    Replenishment from the completion model (``fill_size`` per ``refill_median_ns``;
    instant without one); price improvement only for equities, where hidden and
    midpoint liquidity make it real (elsewhere a print inside a one-tick spread is
    clock skew between the quote and trade streams).
    """
    completion = model.completion
    if model.depth is None and completion is None:
        return None
    tau = 0
    if model.depth is not None:
        offsets, sizes = implied_ladder(model.depth, instrument)
        tau = int(getattr(model.depth, "touch_unit_tau_ns", 0))
    else:  # no depth behind the touch is known (L1-only calibration data): the touch alone, refilling
        offsets, sizes = np.zeros(0), np.zeros(0)
    rate, unit = math.inf, 0.0
    if completion is not None and math.isfinite(completion.refill_median_ns) and completion.refill_median_ns > 0 \
            and math.isfinite(completion.fill_size) and completion.fill_size > 0:
        unit = float(completion.fill_size)
        rate = unit / float(completion.refill_median_ns)
    equity = str(instrument.asset_class) == "equity"
    return WalkParams(offsets, sizes, float(instrument.tick_size), rate, unit,
                      float(model.price_improvement_share) if equity else 0.0,
                      float(model.price_improvement_ratio) if equity else 0.0, tau)


# The recent touch size both faces track: (total, weight, log size of the last quote, quotes seen) and its time.
TOUCH_STATE = 4


@numba.njit(cache=True, nogil=True)
def fold_touch_unit(ts, bid_sz, ask_sz, start, stop, state, state_ts, tau):  # pragma: no cover - compiled
    """Fold quote rows ``[start, stop)`` into the recent-touch-size ``state`` (see :func:`touch_unit_at`).

    The recursion of :func:`tradebook.sim.depth.recent_touch_size`: the time-weighted mean
    of ``log sqrt(bid_sz * ask_sz)``, each quote's size held until the next, weights
    ``exp(-age / tau)``; quotes without positive sizes on both sides are skipped. Row by
    row, so folding a stream in any batches gives the same state.
    """
    total, weight, x_last, seen, t_last = state[0], state[1], state[2], state[3], state_ts[0]
    inv_tau = 1.0 / tau
    for i in range(start, stop):
        b, a = bid_sz[i], ask_sz[i]
        if not (b > 0.0 and a > 0.0 and b * a < np.inf):
            continue
        x = 0.5 * math.log(b * a)
        if seen > 0.0:
            age = (ts[i] - t_last) * inv_tau
            if age < 1e-3:  # the series to a^4: exact to a double's precision here, and no exp per quote
                gained = age * (1.0 - age * (0.5 - age * (1.0 / 6.0 - age * (1.0 / 24.0))))
                decay = 1.0 - gained
            else:
                decay = math.exp(-age)
                gained = -math.expm1(-age)
            total = decay * total + gained * x_last
            weight = decay * weight + gained
        x_last = x
        seen += 1.0
        t_last = ts[i]
    state[0], state[1], state[2], state[3], state_ts[0] = total, weight, x_last, seen, t_last


@numba.njit(cache=True, nogil=True)
def touch_unit_at(state, state_ts, t, tau):  # pragma: no cover - compiled
    """The recent touch size at ``t`` from a folded state (NaN before any quote with sizes)."""
    if state[3] <= 0.0:
        return np.nan
    age = (t - state_ts[0]) * (1.0 / tau)
    if age < 0.0:
        age = 0.0
    decay = math.exp(-age)
    gained = -math.expm1(-age)
    weight = decay * state[1] + gained
    if weight > 0.0:
        return math.exp((decay * state[0] + gained * state[2]) / weight)
    return math.exp(state[2])


@numba.njit(cache=True, nogil=True)
def walk_draw(seed, request, take):  # pragma: no cover - compiled
    """A uniform in (0, 1) for take number ``take`` of the order submitted by request ``request`` (counter-based)."""
    key = _splitmix64(np.uint64(seed) * np.uint64(1000003) + np.uint64(request) * np.uint64(4)
                      + np.uint64(_WALK_STREAM))
    a = _splitmix64(key + np.uint64(take))
    return (np.float64(a >> np.uint64(11)) + 0.5) / 9007199254740992.0


@numba.njit(cache=True, nogil=True)
def _on_grid(steps, step):  # pragma: no cover - compiled
    """``steps`` whole steps of ``step`` as the float nearest the decimal price (61824.24, not 61824.240000000005)."""
    if step >= 1.0:
        return steps * step
    per_unit = round(1.0 / step)
    if abs(per_unit * step - 1.0) < 1e-12:
        return steps / per_unit  # both exact: the division rounds once, to the nearest float
    return steps * step


@numba.njit(cache=True, nogil=True)
def refilled_depletion(depleted, ts, last_ts, rate):  # pragma: no cover - compiled
    """What an order's earlier takes still hold off the book at ``ts``: ``depleted`` less the refill since
    ``last_ts`` at ``rate`` units a nanosecond (inf: the book is whole again at any later quote)."""
    if depleted > 0.0:
        dt = ts - last_ts
        if dt > 0:
            return max(0.0, depleted - rate * dt)
    return depleted


@numba.njit(cache=True, nogil=True)
def walk_holds_without_unit(side, remaining, bid, ask, bid_sz, ask_sz, ts, depleted, last_ts, walk, real_px,
                            real_sz):  # pragma: no cover - compiled
    """True when the touch and the recorded levels behind it (after the order's depletion, refilled as in
    :func:`walk_book`) hold the whole remainder with room to spare (a relative 1e-9).

    The walk then ends before the implied ladder, so its fills are the same for any recent touch size:
    a caller may pass ``unit_size`` 0 and leave the tracked size unfolded until a walk needs it (the fold is
    row by row, so folding later gives the same state). Invalid quotes and empty orders: walk_book takes nothing.
    """
    if not (bid < ask) or not (bid_sz > 0.0) or not (ask_sz > 0.0) or remaining <= 0.0:
        return True
    touch = ask_sz if side > 0 else bid_sz
    deepest = ask if side > 0 else bid
    d = refilled_depletion(depleted, ts, last_ts, walk[1])
    held = touch
    for r in range(len(real_px)):
        if real_sz[r] > 0.0 and side * (real_px[r] - deepest) > 0.0:
            held += real_sz[r]
            deepest = real_px[r]
    return held - d > remaining * (1.0 + 1e-9)


@numba.njit(cache=True, nogil=True)
def walk_book(side, remaining, limit, bid, ask, bid_sz, ask_sz, ts, depleted, last_ts, seed, request, takes,
              offsets, sizes, unit_size, walk, slippage_bps, lot, out_qty, out_px, real_px,
              real_sz):  # pragma: no cover - compiled
    """Fills a taker order gets at one quote walking the touch and the implied ladder: (n fills, depletion after).

    ``walk`` = [tick, refill_per_ns, refill_unit, improve_share, improve_ratio]. The
    book is the touch (``ask_sz`` at ``ask`` for a buy) then ``sizes[j] * unit_size``
    at ``offsets[j]`` ticks beyond it (``unit_size``: the recent touch size, or 1 for
    sizes in quantity; NaN: nothing behind the touch is known yet); the order's earlier takes have removed its first
    ``depleted`` units, refilled since ``last_ts`` at the refill rate. An order that
    has emptied the book (depletion left after the refill) takes only once at least
    ``min(remaining, refill_unit)`` is there again. Fills go to ``out_qty``/``out_px``
    (one per level reached, whole lots, cumulatively floored), never through
    ``limit`` (NaN for market orders). 0 fills leave the depletion unchanged.

    Where the feed carries the book (a top-N frame), ``real_px``/``real_sz`` are the
    recorded levels behind the touch on the order's side: the walk takes them as they
    are, then the implied ladder only beyond the deepest of them (empty arrays: L1).
    """
    if not (bid < ask) or not (bid_sz > 0.0) or not (ask_sz > 0.0) or remaining <= 0.0:
        return 0, depleted
    tick, rate, unit, share, ratio = walk[0], walk[1], walk[2], walk[3], walk[4]
    touch = ask_sz if side > 0 else bid_sz
    far = ask if side > 0 else bid
    d = refilled_depletion(depleted, ts, last_ts, rate)
    if not (unit_size > 0.0):
        unit_size = 0.0  # no recent touch size yet: the touch alone
    total = touch
    deepest = far
    for r in range(len(real_px)):
        if real_sz[r] > 0.0 and side * (real_px[r] - deepest) > 0.0:
            total += real_sz[r]
            deepest = real_px[r]
    n_real = len(real_px)
    if unit_size > 0.0:  # (0: the implied levels hold nothing, and their prices need not be worked out)
        for j in range(len(sizes)):
            if side * (_on_grid(round((far + side * offsets[j] * tick) / tick), tick) - deepest) > 0.0:
                total += sizes[j] * unit_size
    available = total - d
    if d > 0.0 and available < min(remaining, unit):
        return 0, depleted  # still waiting for the book to refill
    if available <= 0.0:
        return 0, depleted
    want = min(remaining, available)
    q = math.floor(want / lot * (1.0 + 1e-12)) * lot
    if q < remaining and remaining - q < 1e-9 * lot:
        q = remaining
    if q <= 0.0:
        return 0, depleted
    mid = 0.5 * (bid + ask)
    slip = side * mid * slippage_bps * 1e-4
    limited = not math.isnan(limit)
    n = 0
    pos = d  # position in the book (units from its front) where this take starts
    start = 0.0  # where the level being looked at starts
    taken = 0.0
    booked = 0.0
    deepest = far
    for k in range(-1, n_real + len(sizes)):
        j = k - n_real  # an implied level when >= 0
        if k < 0:
            size = touch
            px = far
            if share > 0.0 and pos < touch and walk_draw(seed, request, takes) < share:
                half_tick = 0.5 * tick
                better = far - side * min(ratio, 1.0) * 0.5 * (ask - bid)
                steps = better / half_tick
                steps = math.ceil(steps - 1e-9) if side > 0 else math.floor(steps + 1e-9)
                better = _on_grid(steps, half_tick)
                if bid < better < ask:
                    px = better
        elif k < n_real:  # a recorded level: taken when it lies beyond the ones before it
            if not (real_sz[k] > 0.0 and side * (real_px[k] - deepest) > 0.0):
                continue
            size = real_sz[k]
            px = real_px[k]
            deepest = px
        else:
            if not (unit_size > 0.0):
                break  # empty implied levels: each would be passed over (it ends where it starts, at or before pos)
            size = sizes[j] * unit_size
            px = _on_grid(round((far + side * offsets[j] * tick) / tick), tick)
            if not side * (px - deepest) > 0.0:
                continue
        px += slip
        end = start + size
        if end <= pos:
            start = end
            continue
        if limited and ((side > 0 and px > limit * (1.0 + 1e-12)) or (side < 0 and px < limit * (1.0 - 1e-12))):
            break
        here = min(end - pos, q - taken)
        last = here >= q - taken
        taken += here
        pos += here
        cum = q if last else math.floor(taken / lot * (1.0 + 1e-12)) * lot
        if cum > booked:
            out_qty[n] = cum - booked
            out_px[n] = px
            n += 1
            booked = cum
        start = end
        if last:
            break
    if n == 0:
        return 0, depleted
    return n, d + booked
