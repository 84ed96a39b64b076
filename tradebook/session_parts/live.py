"""A session on a broker: the venue to arm, paper fallbacks said once, the routes shown, connecting with a
health check (paper takes over when it fails) and the broker's instrument rules compared with ours."""

from __future__ import annotations

import asyncio
import logging

from tradebook.errors import SessionError
from tradebook.session_parts.loop import UNRESOLVED_RECONCILE_TIMEOUT_S
from tradebook.venues.base import VenuePort

log = logging.getLogger(__name__)


class LiveVenue:
    """Connecting to the session's venue and what routing says (a part of Session)."""

    def _venue_to_arm(self, venue_or_account: VenuePort | str) -> VenuePort:
        if isinstance(venue_or_account, VenuePort):
            return venue_or_account
        if not isinstance(venue_or_account, str):
            raise SessionError(f"arm_live takes a VenuePort or a venue name or account id, got "
                               f"{type(venue_or_account).__name__}")
        routes = list(self.routing.routes.values()) if self.routing is not None else []
        for route in routes:
            if route.venue is not None and venue_or_account in (route.venue_name, route.venue.account_id):
                return route.venue
        for route in routes:
            if route.wanted == venue_or_account and route.fallback is not None:
                raise SessionError(f"{venue_or_account} cannot be armed: {route.reason}")
        built = sorted({f"{r.venue_name} (account {r.venue.account_id})" for r in routes if r.venue is not None})
        raise SessionError(f"no venue {venue_or_account!r} is routed for this session's instruments; "
                           f"routed: {', '.join(built) or 'none (set routing and venues in the configuration)'}")

    def _announce_fallbacks(self) -> None:
        """Asset classes that trade on paper although the configuration routes venues: an alert each (once)."""
        if self.routing is None or not (self.config.routing or self.routing.forced_paper):
            return  # a plain paper session: nothing was asked for that it does not get
        known = {(a.kind, a.message) for a in self.oms.alerts()}
        classes = {i.asset_class for i in self.instruments.values()}
        for route in self.routing.fallbacks(classes):
            message = f"{route.asset_class} orders go to the paper venue: {route.reason}"
            if ("paper_fallback", message) not in known:
                self.oms.alert("paper_fallback", message)

    def _routes_text(self) -> str | None:
        if self._armed_fallback is not None:
            return f"paper: {self._armed_fallback}"
        if self._paper is not None:
            return f"{self.venue.name} (account {self.venue.account_id})"
        if self.routing is None:
            return None
        classes = sorted({i.asset_class for i in self.instruments.values()})
        routes = self.routing.routes
        return "; ".join(f"{c}: paper ({routes[c].venue_name} routed, not armed)" if routes[c].venue is not None
                         else f"{c}: {routes[c].describe()}" for c in classes) or None

    async def _reconcile_now(self) -> None:
        try:
            self.alerts.extend(await asyncio.wait_for(self.oms.reconcile(), UNRESOLVED_RECONCILE_TIMEOUT_S))
        except Exception as exc:  # noqa: BLE001 - tried again at the next interval; the order stays blocked
            log.warning("reconciling unresolved orders with %s failed: %s", self.venue.name, exc)
            return
        self._decide_unsent()

    async def _compare_instruments(self, timeout_s: float) -> None:
        """The broker's own rules for the session's instruments (its market metadata) against ours: an alert per
        instrument it does not list or whose tick, lot, minimum size or notional differ (orders off its rules
        would be refused there)."""
        try:
            listed = await asyncio.wait_for(self.venue.instruments(), timeout_s)
        except NotImplementedError:
            return
        except Exception as exc:  # noqa: BLE001 - the check is advisory; trading goes on, said once
            self.oms.alert("instruments_unread", f"{self.venue.name}: its instrument list could not be read: {exc}")
            return
        theirs = {i.instrument_id: i for i in listed}
        for instrument_id, ours in sorted(self.instruments.items()):
            venue_instrument = theirs.get(instrument_id)
            if venue_instrument is None:
                self.oms.alert("instrument_not_listed", f"{instrument_id} is not among {self.venue.name}'s "
                                                        "instruments: its orders may be refused")
                continue
            differ = [f"{name} {getattr(ours, name)} here, {getattr(venue_instrument, name)} there"
                      for name in ("tick_size", "lot_size", "min_quantity", "min_notional")
                      if getattr(ours, name) != getattr(venue_instrument, name)]
            if differ:
                self.oms.alert("instrument_rules_differ", f"{instrument_id} at {self.venue.name}: {'; '.join(differ)} "
                                                          f"({venue_instrument.description})")

    async def _connect_venue(self) -> None:
        """Connect the session's venue; an armed one must pass its health check, else paper takes over."""
        self.oms.bind_loop()  # a venue's stream or poller thread may deliver events from now on
        if self._paper is None:
            await self.venue.connect(self.oms.on_event, on_events=self.oms.on_events)
            return
        from tradebook.venues.factory import DEFAULT_HEALTH_TIMEOUT_S

        try:
            await asyncio.wait_for(self.venue.connect(self.oms.on_event, on_events=self.oms.on_events),
                                   DEFAULT_HEALTH_TIMEOUT_S * 2)
            health = await asyncio.wait_for(self.venue.health(), DEFAULT_HEALTH_TIMEOUT_S)
            ok, why = bool(health), health.reason
        except Exception as exc:  # noqa: BLE001 - a venue that cannot connect or report is not healthy
            ok, why = False, f"{type(exc).__name__}: {exc}"
        if ok:
            await self._compare_instruments(DEFAULT_HEALTH_TIMEOUT_S)
            return
        armed = self.venue
        try:
            await asyncio.wait_for(armed.close(), DEFAULT_HEALTH_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - leaving it is what matters; say what went wrong
            log.warning("closing %s after its failed health check: %s", armed.name, exc)
        self.oms.close(flush=True)
        self.venue, self.oms, self.portfolio, self.breaker = self._paper
        self.account_id = self._paper_account
        self._paper = None
        self._armed_fallback = f"{armed.name} account {armed.account_id} failed its health check: {why}"
        self.oms.alert("paper_fallback", f"orders go to the paper venue: {self._armed_fallback}")
        self.oms.bind_loop()
        await self.venue.connect(self.oms.on_event, on_events=self.oms.on_events)
