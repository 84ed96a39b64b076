"""Interactive Brokers (ib-async) as a venue: equities and futures through TWS or IB Gateway.

The one rule of the port holds: what happens to an order arrives as events, and every
order carries tradebook's ``client_order_id`` in IB's ``orderRef``, so after any reconnect
or restart the adapter finds its orders (and refuses a second order under an id IB already
holds) by that reference, not by IB's per-connection order ids. The rest is what TWS and
ib-async do when things go wrong, measured against the sandbox (tradebook.sandbox.tws) and
handled here:

- A new order is answered (``Submitted``/``PreSubmitted``, or an error) within
  ``ack_timeout_s`` or :meth:`IbVenue.submit` raises
  :class:`~tradebook.errors.OutcomeUnknownError`; it is never resent, the order manager asks
  :meth:`IbVenue.order_status`, which looks the order up by ``orderRef`` among IB's open and
  completed orders and its executions.
- ib-async does not reconnect: on a lost link this adapter reconnects with backoff
  (``reconnect_min_s`` doubling to ``reconnect_max_s``), then asks ``reqExecutions`` and the
  open and completed orders and delivers, once each by ``execId``, the fills and the final
  states it missed (the old ``Trade`` objects stay ``Submitted`` and get nothing).
- Fills come as ``execDetails`` (ib-async drops a repeated one; this adapter also keeps the
  ids it delivered) and are delivered when their commission report arrives (at most
  ``commission_wait_s`` later, else with fee 0). A fill after a cancel is a fill.
- IB's errors: a refused new order raises :class:`~tradebook.errors.VenueRejectedError` with
  the RejectCode for its code and IB's code as ``venue_code``; error 100 (pacing: the message
  was dropped, the order does not exist) is waited out (``pacing_backoff_s`` times the try)
  and the order sent again under a new IB order id, at most ``pacing_retries`` times, then
  :class:`~tradebook.errors.NotSentError`. ib-async marks a live order ``Cancelled`` on any
  error that names it, even a refused modification or cancel; the adapter knows better and
  delivers ``replace_rejected``/``cancel_rejected`` instead.
- ``connect`` refuses an account TWS does not manage, and a live account (IB's paper
  accounts are ``D...``) on a venue configured as paper.
- ib-async keys its open-orders, completed-orders and positions requests by name, so the
  queries here take turns (two at once would leave one unanswered).
- An expired DAY order looks like a cancel at IB: a ``Cancelled`` this adapter did not ask
  for on a DAY order is delivered as ``expired``; on other times in force as ``cancelled``.

Client ids (:func:`~tradebook.venues.ib_mapping.ib_client_id`): orders go on the ``orders``
id, contract details on the ``data`` id (its own connection, opened when needed). Events
are delivered on the event loop that called :meth:`IbVenue.connect` (ib-async runs on it),
in the order TWS sent them. TWS holds the login: this adapter has no secret, only a host,
a port and client ids, read by :meth:`IbVenue.from_env` from the environment.

This module holds the requests (connect, submit, cancel, replace, the queries, recovery);
the listening half, ib-async's callbacks turned into order events, is
:mod:`tradebook.venues._ib_events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from tradebook.errors import ConfigError, NotSentError, OutcomeUnknownError, VenueError, VenueMappingError, \
    VenueRejectedError
from tradebook.model.instruments import BUNDLED_INSTRUMENTS, AssetClass, Instrument
from tradebook.model.orders import Fill, OrderEventType, OrderIntent, OrderStatus, TimeInForce
from tradebook.model.time import now_ns
from tradebook.venues import ib_mapping as im
from tradebook.venues._ib_events import _CANCELLED, IbEvents, _Rec
from tradebook.venues.base import (
    AccountState, BatchEventHandler, Capability, EventHandler, VenueHealth, VenueOrderState, VenuePort,
)

log = logging.getLogger(__name__)

E = OrderEventType
ENV_HOST, ENV_PORT, ENV_CLIENT_ID = "TRADEBOOK_IB_HOST", "TRADEBOOK_IB_PORT", "TRADEBOOK_IB_CLIENT_ID"
ENV_ACCOUNT, ENV_PAPER = "TRADEBOOK_IB_ACCOUNT", "TRADEBOOK_IB_PAPER"
_SECOND_NS = 1_000_000_000


class IbVenue(IbEvents, VenuePort):
    """One IB account through TWS or IB Gateway (paper or live), with ib-async on the caller's event loop.

    ``host``/``port`` name the TWS API endpoint (7497 paper TWS, 7496 live, 4002/4001 the
    gateway; the sandbox's in tests); ``base_client_id`` the first of the three client ids
    (orders, data, feed). ``instruments`` maps instrument ids to definitions (the bundled
    equities and futures by default). Waits are in seconds and every one is bounded.
    """

    name = "ibkr"
    capabilities = frozenset({Capability.NATIVE_REPLACE, Capability.STREAMING_FILLS, Capability.SHORTING,
                              Capability.EXTENDED_HOURS})
    # IB lists an order among the open ones as soon as it acknowledged it
    order_visibility_grace_ns = 2 * _SECOND_NS

    def __init__(self, *, host: str = "127.0.0.1", port: int = 7497, base_client_id: int = im.DEFAULT_BASE_CLIENT_ID,
                 account_id: str | None = None, paper: bool = True,
                 instruments: Mapping[str, Instrument] | None = None, connect_timeout_s: float = 5.0,
                 ack_timeout_s: float = 5.0, request_timeout_s: float = 10.0, reconnect_min_s: float = 0.5,
                 reconnect_max_s: float = 30.0, pacing_retries: int = 5, pacing_backoff_s: float = 0.5,
                 commission_wait_s: float = 0.5, outside_rth: bool = False) -> None:
        for label, value in (("connect_timeout_s", connect_timeout_s), ("ack_timeout_s", ack_timeout_s),
                             ("request_timeout_s", request_timeout_s), ("reconnect_min_s", reconnect_min_s),
                             ("reconnect_max_s", reconnect_max_s), ("pacing_backoff_s", pacing_backoff_s)):
            if not (isinstance(value, (int, float)) and value > 0):
                raise ConfigError(f"IbVenue {label} must be positive seconds, got {value!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError(f"IbVenue port must be an int from 1 to 65535, got {port!r}")
        self.host, self.port = host, port
        self.orders_client_id = im.ib_client_id(im.IbClientRole.ORDERS, base_client_id)
        self.data_client_id = im.ib_client_id(im.IbClientRole.DATA, base_client_id)
        self.paper = paper
        self.is_live = not paper
        self.account_id = account_id or ""
        self._registry: Mapping[str, Instrument] = instruments if instruments is not None else BUNDLED_INSTRUMENTS
        self.connect_timeout_s, self.ack_timeout_s, self.request_timeout_s = (connect_timeout_s, ack_timeout_s,
                                                                              request_timeout_s)
        self.reconnect_min_s, self.reconnect_max_s = reconnect_min_s, reconnect_max_s
        self.pacing_retries, self.pacing_backoff_s = pacing_retries, pacing_backoff_s
        self.commission_wait_s = commission_wait_s
        self.outside_rth = outside_rth
        self._ib: Any = None
        self._data_ib: Any = None
        self._handler: EventHandler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._connected = False
        self._reconnect_task: asyncio.Task | None = None
        # ib-async keys the open/completed orders and positions requests by name: one of each at a time
        self._queries = asyncio.Lock()
        self._recs: dict[str, _Rec] = {}
        self._coid_of_order_id: dict[int, str] = {}
        self._waiters: dict[str, asyncio.Future] = {}
        self._pending_fills: dict[str, tuple[Any, asyncio.TimerHandle]] = {}  # execId -> (ib Fill, timer)
        self._delivered_fills: set[str] = set()
        self._handled_error: tuple[int, int] | None = None  # (order id, code) the status handler already took
        self._pacing_errors = 0
        self._rate_limited_until = 0.0
        self._last_error = ""
        self.connects = 0  # successful connections of the orders client, reconnects included
        self.recoveries = 0  # recoveries after a reconnect
        self.recovered_fills = 0  # fills delivered by a recovery that the stream had not delivered

    @classmethod
    def from_env(cls, *, environ: Mapping[str, str] | None = None, **options: Any) -> IbVenue:
        """An IbVenue configured from the environment, never from a file.

        ``TRADEBOOK_IB_HOST`` (127.0.0.1), ``TRADEBOOK_IB_PORT`` (7497), ``TRADEBOOK_IB_CLIENT_ID``
        (the base client id, 10), ``TRADEBOOK_IB_ACCOUNT`` and ``TRADEBOOK_IB_PAPER`` (``false``
        for a live account; paper by default). Keyword options win over the environment
        (``client_id``, as the configuration names it, is the base client id).
        """
        env = os.environ if environ is None else environ
        settings: dict[str, Any] = {"host": env.get(ENV_HOST) or "127.0.0.1"}
        for name, key, default in ((ENV_PORT, "port", 7497), (ENV_CLIENT_ID, "base_client_id",
                                                               im.DEFAULT_BASE_CLIENT_ID)):
            text = env.get(name)
            if text is None or text == "":
                settings[key] = default
                continue
            try:
                settings[key] = int(text)
            except ValueError:
                raise ConfigError(f"{name}={text!r}: expected an integer") from None
        paper_text = env.get(ENV_PAPER, "true").strip().lower()
        if paper_text not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{ENV_PAPER}={paper_text!r}: expected true or false")
        settings["paper"] = paper_text in ("true", "1", "yes")
        settings["account_id"] = env.get(ENV_ACCOUNT) or None
        if "client_id" in options:  # the configuration's name for it (venues.<name>.options.client_id)
            options["base_client_id"] = options.pop("client_id")
        settings.update(options)
        return cls(**settings)

    def __repr__(self) -> str:
        state = "connected" if self._connected else "not connected"
        return (f"<IbVenue {self.account_id or '?'} {'paper' if self.paper else 'LIVE'} {self.host}:{self.port} "
                f"client {self.orders_client_id} ({state})>")

    # -- life cycle ----------------------------------------------------------------------------------
    async def connect(self, on_event: EventHandler, *, on_events: BatchEventHandler | None = None) -> None:
        """Connect the orders client, learn the orders IB holds under tradebook ids; events go to ``on_event``."""
        if self._connected:
            raise VenueError(f"{self!r} is already connected; close() it first")
        self._handler = on_event
        self._loop = asyncio.get_running_loop()
        self._closing = False
        await self._open()
        problem = self._account_problem(self._ib.managedAccounts())
        if problem is not None:
            await self.close()
            raise ConfigError(problem)
        await self._recover(initial=True)

    def _account_problem(self, managed: list[str]) -> str | None:
        """Why this connection must not trade: another account than configured, or live money taken for paper."""
        if self.account_id not in managed:
            return (f"TWS at {self.host}:{self.port} manages {managed}, not account {self.account_id!r} "
                    "(TRADEBOOK_IB_ACCOUNT / venues.<name>.account_id)")
        if self.paper and not self.account_id.startswith("D"):
            # IB's paper accounts are DU... (DF... for advisors); anything else trades real money
            return (f"IB account {self.account_id} is a live account but this venue is configured as paper; set "
                    "TRADEBOOK_IB_PAPER=false to trade it as live (and arm it as such)")
        return None

    async def close(self) -> None:
        """Stop reconnecting and delivering; disconnect (working orders stay working at IB)."""
        self._closing = True
        task, self._reconnect_task = self._reconnect_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, self.request_timeout_s)
        for exec_id in list(self._pending_fills):  # fills waiting for a commission go now, without it
            self._deliver_pending(exec_id)
        self._connected = False
        for ib in (self._ib, self._data_ib):
            if ib is not None:
                with contextlib.suppress(Exception):
                    ib.disconnect()
        self._data_ib = None
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(("disconnected", 0, "the venue was closed"))

    async def _open(self) -> None:
        from ib_async import IB
        from ib_async.ib import StartupFetch

        ib = IB()
        ib.RaiseRequestErrors = False
        ib.orderStatusEvent += self._on_status
        ib.execDetailsEvent += self._on_exec
        ib.commissionReportEvent += self._on_commission
        ib.errorEvent += self._on_error
        ib.disconnectedEvent += lambda: self._on_disconnected(ib)
        fetch = StartupFetch.ORDERS_OPEN | StartupFetch.ORDERS_COMPLETE  # executions: asked by _recover
        try:
            await asyncio.wait_for(ib.connectAsync(self.host, self.port, clientId=self.orders_client_id,
                                                   timeout=self.connect_timeout_s, account=self.account_id,
                                                   fetchFields=fetch), self.connect_timeout_s + 1)
        except (OSError, asyncio.TimeoutError, TimeoutError, ConnectionError) as exc:
            with contextlib.suppress(Exception):
                ib.disconnect()
            self._last_error = f"could not connect to TWS at {self.host}:{self.port} as client " \
                               f"{self.orders_client_id}: {exc!r}"
            raise NotSentError(self._last_error) from None
        self._ib = ib
        self._connected = True
        self.connects += 1
        if not self.account_id:
            accounts = ib.managedAccounts()
            self.account_id = accounts[0] if accounts else ""
        self._last_error = ""

    def _on_disconnected(self, ib: Any) -> None:
        if ib is not self._ib:
            return
        self._connected = False
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(("disconnected", 0, "the link to TWS dropped before an answer"))
        if self._closing:
            return
        self._last_error = f"the link to TWS at {self.host}:{self.port} dropped; reconnecting"
        log.warning("%r: link lost; reconnecting", self)
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        """Connect again with backoff, then recover; a recovery cut short (the link went again) is tried again."""
        delay = self.reconnect_min_s
        attempt = 0
        while not self._closing:
            await asyncio.sleep(delay)
            attempt += 1
            if not self._connected:
                try:
                    await self._open()
                except VenueError as exc:
                    log.info("%r: reconnect %d failed (%s); next in %.1f s", self, attempt, exc, delay)
                    delay = min(delay * 2, self.reconnect_max_s)
                    continue
            try:
                await self._recover(initial=False)
                return
            except (VenueError, ConnectionError, asyncio.TimeoutError) as exc:
                log.warning("%r: recovery after reconnect failed (%s); tried again in %.1f s", self, exc, delay)
                delay = min(delay * 2, self.reconnect_max_s)

    async def wait_connected(self, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until the orders client is connected and recovered; whether it is."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            if self._connected and (self._reconnect_task is None or self._reconnect_task.done()):
                return True
            await asyncio.sleep(0.02)
        return self._connected

    # -- recovery ------------------------------------------------------------------------------------
    async def _recover(self, *, initial: bool) -> None:
        """After a (re)connect: fills and final states IB holds for our orders that were not delivered.

        On the first connect it only learns which client order ids IB holds (so a second
        order under one is refused); the order manager's reconcile does the rest.
        """
        ib = self._ib
        async with self._queries:
            executions = await self._executions(ib)
            completed = await self._request(ib.reqCompletedOrdersAsync(False), "the completed orders")
        trades = [*ib.openTrades(), *completed]
        if initial:
            for trade in trades:
                ref = trade.order.orderRef
                if ref and ref not in self._recs:
                    self._recs[ref] = self._rec_from_trade(trade)
            for fill in executions:
                self._delivered_fills.add(fill.execution.execId)  # history before this connection
            return
        self.recoveries += 1
        for fill in sorted(executions, key=lambda f: f.execution.time):
            rec = self._recs.get(fill.execution.orderRef)
            if rec is not None and self._take_fill(rec, fill, recovered=True):
                self.recovered_fills += 1
        for trade in trades:
            rec = self._recs.get(trade.order.orderRef)
            if rec is None or rec.done:
                continue
            rec.trade, rec.order_id = trade, trade.order.orderId
            self._coid_of_order_id[trade.order.orderId] = rec.coid
            self._apply_status(rec, trade, trade.orderStatus.status, 0, "")

    def _rec_from_trade(self, trade: Any) -> _Rec:
        order = trade.order
        rec = _Rec(order.orderRef, self._instrument_id(trade.contract), order.tif or "DAY",
                   im._decimal(order.totalQuantity), trade.contract, order.orderId, trade)
        status = trade.orderStatus.status
        rec.accepted = status not in ("PendingSubmit", "ApiPending")
        rec.done = status in _CANCELLED or status in ("Filled", "Inactive")
        self._coid_of_order_id[order.orderId] = rec.coid
        return rec

    def _instrument_id(self, contract: Any) -> str:
        try:
            return im.instrument_id_from_ib(contract)
        except VenueMappingError:
            pass
        # TWS leaves the primary exchange out of some messages (positions): the registry knows the symbol
        name = contract.symbol + contract.currency if contract.secType == "CASH" else \
            contract.localSymbol or contract.symbol
        kind = {"FUT": AssetClass.FUTURE, "CASH": AssetClass.FX_SPOT}.get(contract.secType, AssetClass.EQUITY)
        for instrument in self._registry.values():
            if instrument.asset_class is kind and instrument.symbol in (name, contract.symbol):
                return instrument.instrument_id
        return f"{name}.IB"  # not in the registry: named so, never silently taken for another

    async def _executions(self, ib: Any) -> list[Any]:
        """reqExecutions' answer, each as ib-async keeps it (with its commission report once that came)."""
        found = await self._request(ib.reqExecutionsAsync(), "the executions")
        # an execution ib-async had seen comes back as a new object without its commission report
        return [ib.wrapper.fills.get(f.execution.execId, f) for f in found]

    async def _request(self, awaitable: Any, what: str) -> Any:
        try:
            return await asyncio.wait_for(awaitable, self.request_timeout_s)
        except (asyncio.TimeoutError, TimeoutError):
            raise OutcomeUnknownError(f"TWS did not send {what} within {self.request_timeout_s} s") from None
        except ConnectionError as exc:
            raise NotSentError(f"asking TWS for {what}: {exc}") from None

    # -- orders ----------------------------------------------------------------------------------------
    def _require_connection(self, what: str) -> Any:
        if not self._connected or self._ib is None or not self._ib.isConnected():
            trying = self._reconnect_task is not None and not self._reconnect_task.done()
            raise NotSentError(f"{what}: not connected to TWS at {self.host}:{self.port}"
                               f"{' (reconnecting)' if trying else ''}")
        return self._ib

    async def submit(self, intent: OrderIntent) -> None:
        """Place the order (``orderRef`` = its client order id) and wait for IB's first answer.

        Raises VenueRejectedError (IB refused it, or IB already holds an order under this
        client order id), NotSentError (not connected; or paced out every try) or
        OutcomeUnknownError (no answer within ``ack_timeout_s``, or the link dropped first).
        """
        coid = intent.client_order_id
        ib = self._require_connection(f"submit {coid}")
        if coid in self._recs:
            raise VenueRejectedError(f"IB already holds an order under client order id {coid!r} (orderRef); "
                                     "a second copy is not sent", code="duplicate_client_id")
        instrument = self._registry.get(intent.instrument_id)
        if instrument is None:
            raise VenueRejectedError(f"{coid}: instrument {intent.instrument_id!r} is not known to this IB venue; "
                                     f"known: {sorted(self._registry)}", code="unknown_instrument")
        try:
            contract = im.ib_contract(instrument)
            im.ib_order(side=intent.side, quantity=intent.quantity, order_type=intent.order_type,
                        time_in_force=intent.time_in_force, client_order_id=coid, limit_price=intent.limit_price,
                        stop_price=intent.stop_price)
        except VenueMappingError as exc:
            raise VenueRejectedError(f"{coid}: not sent to IB: {exc}", code="unsupported_order") from None
        rec = _Rec(coid, intent.instrument_id, im.time_in_force_to_ib(TimeInForce(intent.time_in_force)),
                   intent.quantity, contract)
        attempt = 0
        while True:
            order = im.ib_order(side=intent.side, quantity=intent.quantity, order_type=intent.order_type,
                                time_in_force=intent.time_in_force, client_order_id=coid,
                                limit_price=intent.limit_price, stop_price=intent.stop_price,
                                outside_rth=self.outside_rth)
            if self.account_id:
                order.account = self.account_id
            waiter = self._loop.create_future()
            self._waiters[coid] = waiter
            try:
                try:
                    order.orderId = ib.client.getReqId()
                    rec.order_id = order.orderId
                    self._coid_of_order_id[order.orderId] = coid
                    self._recs[coid] = rec
                    rec.trade = ib.placeOrder(contract, order)
                except ConnectionError as exc:  # the socket was closed: nothing was written
                    self._recs.pop(coid, None)
                    raise NotSentError(f"submit {coid}: {exc}") from None
                try:
                    outcome, code, text = await asyncio.wait_for(asyncio.shield(waiter), self.ack_timeout_s)
                except (asyncio.TimeoutError, TimeoutError):
                    raise OutcomeUnknownError(f"submit {coid}: TWS did not answer within {self.ack_timeout_s} s; "
                                              "the order may be working (order_status finds it by orderRef)"
                                              ) from None
            finally:
                self._waiters.pop(coid, None)
            if outcome == "accepted":
                return
            if outcome == "disconnected":
                raise OutcomeUnknownError(f"submit {coid}: {text}; the order may be working (order_status finds "
                                          "it by orderRef)")
            if im.ib_error_kind(code) is im.IbErrorKind.PACING:
                attempt += 1
                if attempt > self.pacing_retries:
                    del self._recs[coid]
                    raise NotSentError(f"submit {coid}: IB refused it for pacing (error 100) {attempt} times; "
                                       "it does not exist at IB")
                log.info("%r: %s paced out (error 100); sent again in %.2f s", self, coid,
                         self.pacing_backoff_s * attempt)
                await asyncio.sleep(self.pacing_backoff_s * attempt)
                ib = self._require_connection(f"submit {coid}")
                continue
            rec.done, rec.final = True, E.REJECTED
            raise VenueRejectedError(f"IB refused {coid}: error {code}: {text}",
                                     code=im.reject_code_for_ib_error(code), venue_code=str(code))

    def _working(self, client_order_id: str, what: str) -> _Rec:
        rec = self._recs.get(client_order_id)
        if rec is None:
            raise VenueRejectedError(f"{what} {client_order_id}: no such order at IB (by orderRef)",
                                     code="unknown_order")
        if rec.done:
            raise VenueRejectedError(f"{what} {client_order_id}: the order is done at IB ({rec.final or 'filled'})",
                                     code="too_late_to_cancel")
        return rec

    async def cancel(self, client_order_id: str) -> None:
        """Ask IB to cancel; ``cancelled`` (or ``cancel_rejected``, or a late fill) arrives as an event.

        A cancel refused for pacing is sent again after a backoff; if no answer comes within
        ``ack_timeout_s`` the outcome is unknown (reconcile settles it).
        """
        rec = self._working(client_order_id, "cancel")
        rec.cancel_requested, rec.cancel_refused = True, False
        for attempt in range(self.pacing_retries + 1):
            ib = self._require_connection(f"cancel {client_order_id}")
            paced = self._pacing_errors
            try:
                ib.cancelOrder(rec.trade.order)
            except ConnectionError as exc:
                raise NotSentError(f"cancel {client_order_id}: {exc}") from None
            answered = await self._wait(lambda: rec.done or rec.cancel_refused or self._pacing_errors > paced,
                                        self.ack_timeout_s)
            if rec.done or rec.cancel_refused:
                return
            if not answered:
                raise OutcomeUnknownError(f"cancel {client_order_id}: TWS did not answer within "
                                          f"{self.ack_timeout_s} s")
            await asyncio.sleep(self.pacing_backoff_s * (attempt + 1))
        raise NotSentError(f"cancel {client_order_id}: IB refused it for pacing (error 100) every try")

    async def _wait(self, condition: Any, timeout_s: float) -> bool:
        deadline = self._loop.time() + timeout_s
        while not condition():
            if self._loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def replace(self, client_order_id: str, *, quantity: Decimal | None = None,
                      limit_price: Decimal | None = None, stop_price: Decimal | None = None) -> None:
        """Modify the working order in place (``placeOrder`` under its IB order id); ``replaced`` or
        ``replace_rejected`` arrives as an event."""
        rec = self._working(client_order_id, "replace")
        if rec.replace_pending is not None:
            raise VenueRejectedError(f"replace {client_order_id}: a modification is already waiting for IB's answer",
                                     code="venue_other")
        ib = self._require_connection(f"replace {client_order_id}")
        order = rec.trade.order
        change: dict[str, Any] = {}
        previous: dict[str, Any] = {}
        for name, value, attr in (("quantity", quantity, "totalQuantity"), ("limit_price", limit_price, "lmtPrice"),
                                  ("stop_price", stop_price, "auxPrice")):
            if value is not None:
                if im._decimal(float(value)) != value:
                    raise VenueRejectedError(f"replace {client_order_id}: {name} {value} does not survive IB's "
                                             "float", code="invalid_price" if "price" in name else "invalid_quantity")
                change[name] = value
                previous[attr] = getattr(order, attr)
                setattr(order, attr, float(value))
        if not change:
            raise VenueRejectedError(f"replace {client_order_id} changes nothing", code="venue_other")
        rec.replace_pending = {**change, "_previous": previous}
        try:
            ib.placeOrder(rec.trade.contract, order)
        except ConnectionError as exc:
            self._undo(order, previous)
            rec.replace_pending = None
            raise NotSentError(f"replace {client_order_id}: {exc}") from None
        except AssertionError:  # ib-async refuses to modify an order it holds as done: it just ended
            self._undo(order, previous)
            rec.replace_pending = None
            raise VenueRejectedError(f"replace {client_order_id}: the order ended at IB "
                                     f"({rec.trade.orderStatus.status})", code="too_late_to_cancel") from None
        answered = await self._wait(lambda: rec.replace_pending is None or rec.done, self.ack_timeout_s)
        if not answered:
            raise OutcomeUnknownError(f"replace {client_order_id}: TWS did not answer within {self.ack_timeout_s} s")

    @staticmethod
    def _undo(order: Any, previous: dict[str, Any]) -> None:
        for key, value in previous.items():
            setattr(order, key, value)

    # -- what IB holds -----------------------------------------------------------------------------------
    def _state(self, trade: Any, fills: list[Any]) -> VenueOrderState:
        order = trade.order
        mine = [f for f in fills if f.execution.orderRef == order.orderRef]
        filled = sum((im._decimal(f.execution.shares) for f in mine), Decimal(0))
        avg = (sum((im._decimal(f.execution.shares) * im._decimal(f.execution.price) for f in mine), Decimal(0))
               / filled) if filled else None
        quantity = im._decimal(order.totalQuantity)
        status = im.order_status_from_ib(trade.orderStatus.status, filled_qty=filled, quantity=quantity)
        rec = self._recs.get(order.orderRef)
        if status is OrderStatus.CANCELLED and rec is not None and rec.final in (E.EXPIRED, E.REJECTED):
            # IB shows both as Cancelled: the error or the day's end that ended it said which
            status = OrderStatus.EXPIRED if rec.final is E.EXPIRED else OrderStatus.REJECTED
        unset = 1e308
        return VenueOrderState(order.orderRef, str(order.permId or order.orderId), self._instrument_id(trade.contract),
                               status, quantity, filled, avg,
                               im._decimal(order.lmtPrice) if order.lmtPrice and order.lmtPrice < unset else None,
                               im._decimal(order.auxPrice) if order.auxPrice and order.auxPrice < unset else None)

    async def order_status(self, client_order_id: str) -> VenueOrderState | None:
        """IB's view of the order with this ``orderRef`` (open, then completed), or None when IB has none."""
        ib = self._require_connection(f"order status of {client_order_id}")
        async with self._queries:
            open_trades = await self._request(ib.reqAllOpenOrdersAsync(), "the open orders")
            completed = await self._request(ib.reqCompletedOrdersAsync(False), "the completed orders")
            fills = await self._executions(ib)
        found = [t for t in (*open_trades, *completed) if t.order.orderRef == client_order_id]
        if not found:
            return None
        return self._state(found[0], fills)

    async def open_orders(self) -> list[VenueOrderState]:
        ib = self._require_connection("open orders")
        async with self._queries:
            trades = await self._request(ib.reqAllOpenOrdersAsync(), "the open orders")
            fills = await self._executions(ib)
        return [self._state(t, fills) for t in trades if t.order.orderRef]

    async def positions(self) -> dict[str, Decimal]:
        ib = self._require_connection("positions")
        async with self._queries:
            held = await self._request(ib.reqPositionsAsync(), "the positions")
        return {self._instrument_id(p.contract): im._decimal(p.position) for p in held
                if p.position and (not self.account_id or p.account == self.account_id)}

    async def account(self) -> AccountState:
        ib = self._require_connection("account")
        async with self._queries:
            ib.wrapper.acctSummary.clear()  # ib-async keeps the first summary; ask afresh
            values = await self._request(ib.accountSummaryAsync(self.account_id), "the account summary")
        by_tag = {v.tag: v for v in values if v.currency not in ("", "BASE") or v.tag == "AccountType"}
        try:
            cash = by_tag["TotalCashValue"]
            equity = by_tag["NetLiquidation"]
        except KeyError as missing:
            raise VenueError(f"IB account summary of {self.account_id} lacks {missing}") from None
        power = by_tag.get("BuyingPower", equity)
        return AccountState(self.account_id, cash.currency, Decimal(cash.value), Decimal(equity.value),
                            Decimal(power.value))

    async def fills(self, since_ns: int = 0) -> list[Fill]:
        """Every execution of a tradebook order (one with an orderRef) IB reports at or after ``since_ns``."""
        ib = self._require_connection("fills")
        async with self._queries:
            found = await self._executions(ib)
        out = []
        for fill in found:
            if not fill.execution.orderRef:
                continue
            rec = self._recs.get(fill.execution.orderRef)
            instrument_id = rec.instrument_id if rec is not None else self._instrument_id(fill.contract)
            report = fill.commissionReport if fill.commissionReport.execId == fill.execution.execId else None
            ours = im.fill_from_ib(fill.execution, report, instrument_id=instrument_id, ts_init_ns=now_ns())
            if ours.ts_event_ns >= since_ns:
                out.append(ours)
        return sorted(out, key=lambda f: f.ts_event_ns)

    async def instruments(self) -> list[Instrument]:
        """The registry's equities, futures and FX pairs, their grid from IB's contract details (data client id).

        An instrument IB does not know is left out (and logged).
        """
        from ib_async import IB

        if self._data_ib is None or not self._data_ib.isConnected():
            ib = IB()
            ib.RaiseRequestErrors = False
            try:
                await asyncio.wait_for(ib.connectAsync(self.host, self.port, clientId=self.data_client_id,
                                                       timeout=self.connect_timeout_s, readonly=True,
                                                       fetchFields=_no_fetch()), self.connect_timeout_s + 1)
            except (OSError, asyncio.TimeoutError, TimeoutError, ConnectionError) as exc:
                with contextlib.suppress(Exception):
                    ib.disconnect()
                raise NotSentError(f"could not connect the data client {self.data_client_id} to TWS at "
                                   f"{self.host}:{self.port}: {exc!r}") from None
            self._data_ib = ib
        out = []
        for instrument in self._registry.values():
            if instrument.asset_class not in (AssetClass.EQUITY, AssetClass.FUTURE, AssetClass.FX_SPOT):
                continue
            try:
                contract = im.ib_contract(instrument)
            except VenueMappingError as exc:
                log.info("%r: %s", self, exc)
                continue
            details = await self._request(self._data_ib.reqContractDetailsAsync(contract),
                                          f"contract details of {instrument.instrument_id}")
            if len(details) != 1:
                log.info("%r: IB has %d contracts for %s; left out", self, len(details), instrument.instrument_id)
                continue
            out.append(im.instrument_from_ib(details[0], instrument))
        return out

    async def health(self) -> VenueHealth:
        if not self._connected or self._ib is None or not self._ib.isConnected():
            return VenueHealth(False, self._last_error or f"not connected to TWS at {self.host}:{self.port}")
        if self._loop is not None and self._loop.time() < self._rate_limited_until:
            return VenueHealth(False, "IB refused a message for pacing (error 100) just now; backing off")
        return VenueHealth(True, f"connected to TWS at {self.host}:{self.port} as client {self.orders_client_id}"
                                 f"{f' ({self._last_error})' if self._last_error else ''}")


def _no_fetch() -> Any:
    from ib_async.ib import StartupFetchNONE

    return StartupFetchNONE
