"""The monitoring dashboard: the view functions of :mod:`.views` composed over one :class:`MonitorSource`.

One :class:`MonitorApp` per browser tab. Every second (``refresh_ms``) it reads the source
in a worker thread (a store opened read-only, or the session's own connection: never on
the server's event loop, so the page stays responsive while a read runs) and puts the new
frames on the page; a section whose frame did not change is left alone (charts are not
redrawn for nothing). A read that fails shows its reason in the page's message line and
the next tick tries again.

Controls: pause, resume, halt and flatten, each in two steps: the button asks (a confirm and
a cancel button appear with what the action does), and only "confirm" acts. On a source that
cannot control (a closed store) the buttons are disabled and the page says why. Elements carry
stable CSS classes (``tb-control-halt``, ``tb-confirm``, ``tb-cancel``, ``tb-message``; the status
values have ids ``tb-state``, ``tb-kill-switch``, ... see :func:`.views.status_view`).
"""

from __future__ import annotations

import asyncio
import html
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import panel as pn

from tradebook.errors import TradebookError
from tradebook.monitor import views

log = logging.getLogger(__name__)

REFRESH_MS = 1_000
TABLE_LIMIT = views.TABLE_ROWS
TCA_LIMIT = 5_000  # the TCA charts summarise the latest fills and orders (the report covers whole days)
READ_ONLY_REASON = ("Controls are off: this dashboard reads a closed store read-only. To pause, halt or flatten a "
                    "session, open the dashboard it serves (session.dashboard()).")


@dataclass(frozen=True)
class Control:
    """One control: what the button says, what the confirmation asks, and the source's method it calls."""

    name: str
    label: str
    question: str
    button_type: str

    def run(self, source: Any) -> Any:
        reason = f"{self.name} from the dashboard"
        if self.name in ("halt", "flatten"):
            return getattr(source, self.name)(reason)
        return getattr(source, self.name)()


CONTROLS = (
    Control("pause", "Pause", "Pause the session? It stops reading the feed; working orders stay working.",
            "warning"),
    Control("resume", "Resume", "Resume the session? It reads the feed again from where it paused.", "success"),
    Control("halt", "Halt", "Halt trading (kill switch)? New orders are refused; working orders stay.", "danger"),
    Control("flatten", "Flatten", "Flatten? Every working order is cancelled, then every position is closed "
                                  "at market, and only reducing orders pass after.", "danger"),
)


@dataclass
class Snapshot:
    """One read of the source: every frame the page shows, or the error that stopped the read."""

    status: dict[str, Any]
    frames: dict[str, pd.DataFrame]
    error: str | None = None


def read_snapshot(source: Any) -> Snapshot:
    """Everything the page shows, read from ``source`` once (a failure is kept as the snapshot's error)."""
    with source.reading():  # a closed store is opened once per refresh and closed again
        return _read_all(source)


def _read_all(source: Any) -> Snapshot:
    try:
        status = dict(source.status())
    except TradebookError as exc:
        return Snapshot({"state": "unavailable"}, {}, f"status: {exc}")
    frames: dict[str, pd.DataFrame] = {}
    errors = []
    reads: dict[str, Callable[[], pd.DataFrame]] = {
        "positions": source.positions, "working_orders": source.working_orders,
        "orders": lambda: source.orders(TABLE_LIMIT), "fills": lambda: source.fills(TABLE_LIMIT),
        "alerts": lambda: source.alerts(TABLE_LIMIT), "stages": source.stages,
        "tca_fills": lambda: source.tca_fills(TCA_LIMIT), "tca_orders": lambda: source.tca_orders(TCA_LIMIT),
        "equity": source.equity,
    }
    for name, read in reads.items():
        try:
            frames[name] = read()
        except TradebookError as exc:  # one section's failure does not blank the others
            errors.append(f"{name}: {exc}")
    return Snapshot(status, frames, "; ".join(errors) or None)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame):
        return a.shape == b.shape and list(a.columns) == list(b.columns) and a.equals(b)
    return a == b


class MonitorApp:
    """The dashboard of one browser tab over ``source`` (see the module doc).

    ``refresh()`` reads and shows at once (tests and the first paint call it); served, the
    app refreshes itself every ``refresh_ms`` (:meth:`start_refreshing`).
    """

    def __init__(self, source: Any, *, refresh_ms: int = REFRESH_MS, title: str = "tradebook monitor") -> None:
        self.source = source
        self.refresh_ms = refresh_ms
        self.title = title
        self._shown: dict[str, Any] = {}
        self._reading = threading.Lock()  # one read at a time: a slow read skips ticks instead of piling them up
        self.status_pane = pn.Column(sizing_mode="stretch_width", css_classes=["tb-status-section"])
        self.message = pn.pane.HTML("", css_classes=["tb-message"], sizing_mode="stretch_width")
        self.sections = {name: pn.Column(sizing_mode="stretch_width", css_classes=[f"tb-section-{name}"])
                         for name in ("accounts", "positions", "working_orders", "fills", "orders", "alerts",
                                      "stages", "tca", "equity")}
        self.buttons = {c.name: pn.widgets.Button(name=c.label, button_type=c.button_type, width=110,
                                                  css_classes=["tb-control", f"tb-control-{c.name}"])
                        for c in CONTROLS}
        self.question = pn.pane.HTML("", css_classes=["tb-question"])
        self.confirm = pn.widgets.Button(name="Confirm", button_type="danger", width=110, css_classes=["tb-confirm"])
        self.cancel = pn.widgets.Button(name="Cancel", button_type="light", width=110, css_classes=["tb-cancel"])
        self.confirm_row = pn.Row(self.question, self.confirm, self.cancel, visible=False,
                                  css_classes=["tb-confirm-row"])
        self.pending: Control | None = None
        for control in CONTROLS:
            self.buttons[control.name].on_click(lambda _event, control=control: self.ask(control))
        self.confirm.on_click(self._on_confirm)
        self.cancel.on_click(lambda _event: self.dismiss())
        self.control_note = pn.pane.HTML("", css_classes=["tb-control-note"], sizing_mode="stretch_width")
        self.can_control = False
        self.control_reason = READ_ONLY_REASON
        self._allow_controls(bool(source.can_control), {})

    # -- controls ----------------------------------------------------------------------------------------
    def _allow_controls(self, allowed: bool, status: dict[str, Any]) -> None:
        """Enable the controls, or disable them with the reason shown beside them."""
        if allowed:
            reason = ""
        elif status.get("source") == "session":
            reason = f"Controls are off: the session is {status.get('state', 'not running')}."
        else:
            reason = READ_ONLY_REASON
        if allowed == self.can_control and reason == self.control_reason:
            return
        self.can_control, self.control_reason = allowed, reason
        for button in self.buttons.values():
            button.disabled = not allowed
        self.control_note.object = f'<span class="tb-read-only">{html.escape(reason)}</span>' if reason else ""
        if not allowed:
            self.dismiss()

    def ask(self, control: Control) -> None:
        """First step of a control: show what it does, with confirm and cancel."""
        if not self.can_control:
            self.say(self.control_reason, error=True)
            return
        self.pending = control
        self.question.object = f'<b class="tb-question-text">{html.escape(control.question)}</b>'
        self.confirm.name = f"Confirm {control.name}"
        self.confirm_row.visible = True

    def dismiss(self) -> None:
        self.pending = None
        self.confirm_row.visible = False

    def act(self) -> str:
        """Second step: run the pending control on the source; returns what the page says (raises nothing)."""
        control, self.pending = self.pending, None
        self.confirm_row.visible = False
        if control is None:
            return ""
        try:
            control.run(self.source)
        except TradebookError as exc:
            return self.say(f"{control.label} refused: {exc}", error=True)
        return self.say(f"{control.label}: done.")

    async def _on_confirm(self, _event: Any) -> None:
        # the session's control call waits for its loop: off the server's loop, so the page stays live
        self.confirm.disabled = True
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.act)
            await self.refresh_async()
        finally:
            self.confirm.disabled = False

    def say(self, text: str, *, error: bool = False) -> str:
        css = "tb-error" if error else "tb-info"
        colour = "#cf222e" if error else "#1a7f37"
        self.message.object = f'<span class="{css}" style="color:{colour}">{html.escape(text)}</span>'
        return text

    # -- refresh ---------------------------------------------------------------------------------------------
    def refresh(self) -> Snapshot:
        """Read the source now and show what changed (in the caller's thread)."""
        snapshot = read_snapshot(self.source)
        self.show(snapshot)
        return snapshot

    async def refresh_async(self) -> None:
        """One tick: read in a worker thread, show on the server's loop; skipped while a read still runs."""
        if not self._reading.acquire(blocking=False):
            return
        try:
            snapshot = await asyncio.get_running_loop().run_in_executor(None, read_snapshot, self.source)
        finally:
            self._reading.release()
        self.show(snapshot)

    def start_refreshing(self) -> None:
        """Served: refresh every ``refresh_ms`` while the tab is open (Panel stops it when the tab closes)."""
        pn.state.add_periodic_callback(self.refresh_async, period=self.refresh_ms)

    def show(self, snapshot: Snapshot) -> None:
        """Put a snapshot on the page: each section rebuilt only when its inputs changed."""
        frames, status = snapshot.frames, snapshot.status
        self._allow_controls(bool(status.get("can_control", False)), status)
        instrument = self._instrument(frames)
        self._update("status", (status,), lambda: [views.status_view(status, instrument_id=instrument)])
        builders: dict[str, tuple[tuple[str, ...], Callable[..., Any]]] = {
            "accounts": (("positions",), lambda p: views.accounts_view(p, status)),
            "positions": (("positions",), views.positions_view),
            "working_orders": (("working_orders",), views.working_orders_view),
            "fills": (("fills",), views.fills_view),
            "orders": (("orders",), views.orders_view),
            "alerts": (("alerts",), views.alerts_view),
            "stages": (("stages",), views.stages_view),
            "tca": (("tca_fills", "tca_orders"), views.tca_view),
            "equity": (("equity",), views.equity_view),
        }
        for section, (names, build) in builders.items():
            if all(name in frames for name in names):
                inputs = tuple(frames[name] for name in names)
                if section == "accounts":
                    inputs += (status.get("account"), status.get("mode"))
                    build = lambda p, _account, _mode, build=build: build(p)  # noqa: E731
                self._update(section, inputs, lambda build=build, inputs=inputs: [build(*inputs)])
        if snapshot.error:
            self.say(f"Could not read everything: {snapshot.error}", error=True)

    def _update(self, name: str, inputs: tuple[Any, ...], build: Callable[[], list[Any]]) -> None:
        previous = self._shown.get(name)
        if previous is not None and len(previous) == len(inputs) and all(map(_same, previous, inputs)):
            return
        target = self.status_pane if name == "status" else self.sections[name]
        target.objects = build()
        self._shown[name] = inputs

    @staticmethod
    def _instrument(frames: dict[str, pd.DataFrame]) -> str | None:
        for name in ("positions", "fills", "orders"):
            frame = frames.get(name)
            if frame is not None and len(frame) and "instrument_id" in frame.columns:
                return str(frame["instrument_id"].iloc[0])
        return None

    # -- layout --------------------------------------------------------------------------------------------
    def layout(self) -> pn.viewable.Viewable:
        """The page: status, controls, then positions, working orders and alerts; fills, orders, costs below."""
        def card(title: str, *objects: Any, name: str) -> pn.Card:
            return pn.Card(*objects, title=title, collapsible=False, sizing_mode="stretch_width",
                           css_classes=["tb-card", f"tb-card-{name}"], margin=(5, 5))

        controls = pn.Row(*self.buttons.values(), css_classes=["tb-controls"])
        header = pn.pane.HTML(f'<h2 style="margin:4px 0">{html.escape(self.title)}</h2>', css_classes=["tb-title"])
        tabs = pn.Tabs(("Fills", self.sections["fills"]), ("Orders", self.sections["orders"]),
                       ("Costs (TCA)", self.sections["tca"]), ("Strategies", self.sections["stages"]),
                       ("Equity", self.sections["equity"]), dynamic=False, sizing_mode="stretch_width",
                       css_classes=["tb-tabs"])
        return pn.Column(
            header, self.status_pane, controls, self.confirm_row, self.control_note, self.message,
            card("Accounts", self.sections["accounts"], name="accounts"),
            pn.Row(card("Positions", self.sections["positions"], name="positions"),
                   card("Working orders", self.sections["working_orders"], name="working-orders"),
                   sizing_mode="stretch_width"),
            card("Alerts", self.sections["alerts"], name="alerts"),
            tabs, sizing_mode="stretch_width", css_classes=["tb-monitor"])


def build_app(source: Any, *, refresh_ms: int = REFRESH_MS, title: str = "tradebook monitor") -> pn.viewable.Viewable:
    """The dashboard over ``source`` for one browser tab: painted once now, then refreshed while served."""
    app = MonitorApp(source, refresh_ms=refresh_ms, title=title)
    app.refresh()
    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        app.start_refreshing()
    return app.layout()
