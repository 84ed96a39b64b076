"""The monitoring dashboard: the view functions of :mod:`.views` composed over one :class:`MonitorSource`.

One :class:`MonitorApp` per browser tab. Every second (``refresh_ms``) a thread of its own
reads the source (a store opened read-only, or the session's own connection) outside the
page's document lock, so clicks are handled while a read runs, and hands the snapshot to
the page's next tick; a section whose frame did not change is left alone, and charts are
redrawn at most every 10 s (``CHART_REFRESH_S``). A read that fails shows its reason in the page's message line and
the next tick tries again.

Controls: pause, resume, halt and flatten, each in two steps: the button asks (a confirm and
a cancel button appear with what the action does), and only "confirm" acts. On a source that
cannot control (a closed store) the buttons are disabled and the page says why. Elements carry
stable CSS classes (``tb-control-halt``, ``tb-confirm``, ``tb-cancel``, ``tb-message``; the status
values have ids ``tb-state``, ``tb-kill-switch``, ... see :func:`.views.status_view`).
"""

from __future__ import annotations

import html
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import panel as pn
from panel.io.state import set_curdoc

from tradebook.errors import TradebookError
from tradebook.monitor import views
from tradebook.monitor.source import MonitorSource

log = logging.getLogger(__name__)

REFRESH_MS = 1_000
TABLE_LIMIT = views.TABLE_ROWS
# Charts cost a second of server time to draw under load: redrawn at most this often (seconds)
CHART_REFRESH_S = {"tca": 10.0, "equity": 10.0}
TCA_LIMIT = 2_000  # the TCA charts summarise the latest fills and orders (the daily report covers whole days)
READ_ONLY_REASON = ("Controls are off: this dashboard reads a closed store read-only. To pause, halt or flatten a "
                    "session, open the dashboard it serves (session.dashboard()).")


@dataclass(frozen=True)
class Control:
    """One control: what the button says, what the confirmation asks, its colour, and what it does to the source."""

    name: str
    label: str
    question: str
    color: str
    run: Callable[[MonitorSource], Any]


CONTROLS = (
    Control("pause", "Pause", "Pause the session? It stops reading the feed; working orders stay working.",
            "warning", lambda source: source.pause()),
    Control("resume", "Resume", "Resume the session? It reads the feed again from where it paused, and lifts a "
                                "halt.", "success", lambda source: source.resume()),
    Control("halt", "Halt", "Halt trading (kill switch)? New orders are refused; working orders stay.", "danger",
            lambda source: source.halt("halt from the dashboard")),
    Control("flatten", "Flatten", "Flatten? Every working order is cancelled, then every position is closed "
                                  "at market, and only reducing orders pass after.", "danger",
            lambda source: source.flatten("flatten from the dashboard")),
)


@dataclass
class Snapshot:
    """One read of the source: every frame the page shows, or the error that stopped the read."""

    status: dict[str, Any]
    frames: dict[str, pd.DataFrame]
    error: str | None = None


def read_snapshot(source: MonitorSource, *, charts: bool = True) -> Snapshot:
    """Everything the page shows, read from ``source`` once (a failure is kept as the snapshot's error).

    ``charts=False`` leaves out the TCA rows (the heaviest reads), for a tick whose charts are not due.
    """
    with source.reading():  # a closed store is opened once per refresh and closed again
        return _read_all(source, charts)


def _read_all(source: MonitorSource, charts: bool) -> Snapshot:
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
        "equity": source.equity,
    }
    if charts:
        reads.update(tca_fills=lambda: source.tca_fills(TCA_LIMIT, columns=views.TCA_FILL_COLUMNS),
                     tca_orders=lambda: source.tca_orders(TCA_LIMIT, columns=views.TCA_ORDER_COLUMNS))
    for name, read in reads.items():
        try:
            frames[name] = read()
        except TradebookError as exc:  # one section's failure does not blank the others
            errors.append(f"{name}: {exc}")
    return Snapshot(status, frames, "; ".join(errors) or None)


def _same_pane(old: Any, new: Any) -> bool:
    """Whether ``new`` can be shown by giving ``old`` its content (same kind of pane, same classes)."""
    return (type(old) is type(new) and isinstance(old, pn.pane.PaneBase)
            and list(old.css_classes) == list(new.css_classes))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame):
        return a.shape == b.shape and list(a.columns) == list(b.columns) and a.equals(b)
    return a == b


class MonitorApp:
    """The dashboard of one browser tab over ``source`` (see the module doc).

    ``refresh()`` reads and shows at once (tests and the first paint call it); served, the
    app refreshes itself every ``refresh_ms`` (:meth:`start_refreshing`).
    """

    def __init__(self, source: MonitorSource, *, refresh_ms: int = REFRESH_MS,
                 title: str = "tradebook monitor") -> None:
        self.source = source
        self.refresh_ms = refresh_ms
        self.title = title
        self._shown: dict[str, Any] = {}
        self._built_at: dict[str, float] = {}  # section -> time.monotonic() of its last build
        self.status_pane = pn.Column(sizing_mode="stretch_width", css_classes=["tb-status-section"])
        self.message = pn.pane.HTML("", css_classes=["tb-message"], sizing_mode="stretch_width")
        self.sections = {name: pn.Column(sizing_mode="stretch_width", css_classes=[f"tb-section-{name}"])
                         for name in ("accounts", "positions", "working_orders", "fills", "orders", "alerts",
                                      "stages", "tca", "equity")}
        self.buttons = {c.name: pn.widgets.Button(label=c.label, color=c.color, width=110,
                                                  css_classes=["tb-control", f"tb-control-{c.name}"])
                        for c in CONTROLS}
        self.question = pn.pane.HTML("", css_classes=["tb-question"])
        self.confirm = pn.widgets.Button(label="Confirm", color="danger", width=110, css_classes=["tb-confirm"])
        self.cancel = pn.widgets.Button(label="Cancel", color="light", width=110, css_classes=["tb-cancel"])
        self.confirm_row = pn.Row(self.question, self.confirm, self.cancel, visible=False,
                                  css_classes=["tb-confirm-row"])
        self.pending: Control | None = None
        for control in CONTROLS:
            self.buttons[control.name].on_click(lambda _event, control=control: self.ask(control))
        self.confirm.on_click(self._on_confirm)
        self.cancel.on_click(lambda _event: self.dismiss())
        self.control_note = pn.pane.HTML("", css_classes=["tb-control-note"], sizing_mode="stretch_width")
        self.can_control: bool | None = None  # set by the first _allow_controls
        self.control_reason = ""
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
        self.confirm.label = f"Confirm {control.name}"
        self.confirm_row.visible = True

    def dismiss(self) -> None:
        self.pending = None
        self.confirm_row.visible = False

    def act(self) -> str:
        """Second step: run the pending control on the source now; returns what the page says (raises nothing)."""
        control = self._take_pending()
        if control is None:
            return ""
        text, failed = self._run(control)
        return self.say(text, error=failed)

    def _take_pending(self) -> Control | None:
        control, self.pending = self.pending, None
        self.confirm_row.visible = False
        return control

    def _run(self, control: Control) -> tuple[str, bool]:
        """(what to say, whether it failed): a refusal is shown, never raised into the server."""
        try:
            control.run(self.source)
        except TradebookError as exc:
            log.warning("dashboard: %s refused: %s", control.name, exc)
            return f"{control.label} refused: {exc}", True
        log.info("dashboard: %s done", control.name)
        return f"{control.label}: done.", False

    def _on_confirm(self, _event: Any) -> None:
        # the session's control call waits for its loop: run it in a thread, answer on the page's next tick
        control = self._take_pending()
        if control is None:
            return
        doc = pn.state.curdoc
        self.say(f"{control.label}: sent, waiting for the session ...")

        def work() -> None:
            text, failed = self._run(control)
            def answer() -> None:
                with set_curdoc(doc):
                    self.say(text, error=failed)

            doc.add_next_tick_callback(answer)

        threading.Thread(target=work, name=f"tradebook-monitor-{control.name}", daemon=True).start()

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

    def start_refreshing(self, stop: threading.Event | None = None) -> None:
        """Served: a thread reads the source every ``refresh_ms`` and hands the page each snapshot.

        The read runs outside the page's document lock, so clicks are handled while it
        runs; the next read waits until the page has shown the last one. It starts once
        the page has loaded (its websocket open: before that Panel defers changes, and a
        section replaced then could stay stale in the browser) and ends when the tab
        closes or ``stop`` (the server's) is set.
        """
        doc = pn.state.curdoc
        closed = threading.Event()
        pn.state.on_session_destroyed(lambda _context: closed.set())

        def begin() -> None:
            threading.Thread(target=self._refresh_loop, args=(doc, closed, stop or threading.Event()),
                             name="tradebook-monitor-refresh", daemon=True).start()

        pn.state.onload(begin)

    def _refresh_loop(self, doc: Any, closed: threading.Event, stop: threading.Event) -> None:
        shown = threading.Event()
        shown.set()
        charts_read_at = time.monotonic()  # the first paint read them

        def ended() -> bool:
            return closed.is_set() or stop.is_set()

        while not ended():
            if not shown.wait(0.2):
                continue  # the page has not shown the last snapshot yet (a busy browser or server)
            if closed.wait(self.refresh_ms / 1000) or ended():
                return
            charts_due = time.monotonic() - charts_read_at >= CHART_REFRESH_S["tca"]
            if charts_due:
                charts_read_at = time.monotonic()
            try:
                snapshot = read_snapshot(self.source, charts=charts_due)
            except Exception as exc:  # noqa: BLE001 (an unexpected failure is shown; the next tick tries again)
                log.exception("dashboard: reading %s failed", type(self.source).__name__)
                snapshot = Snapshot({}, {}, f"{type(exc).__name__}: {exc}")
            shown.clear()

            def put(snapshot: Snapshot = snapshot) -> None:
                try:
                    with set_curdoc(doc):  # Panel applies the changes to this page now, not on a later tick
                        self.show(snapshot)
                finally:
                    shown.set()

            try:
                doc.add_next_tick_callback(put)
            except Exception:  # noqa: BLE001 (the document is gone: the tab closed meanwhile)
                return

    def show(self, snapshot: Snapshot) -> None:
        """Put a snapshot on the page: each section rebuilt only when its inputs changed."""
        frames, status = snapshot.frames, snapshot.status
        if not status:  # the read failed before anything: the page keeps what it showed, and says why
            self.say(f"Could not read the source: {snapshot.error}", error=True)
            return
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
        now = time.monotonic()
        if previous is not None and now - self._built_at.get(name, 0.0) < CHART_REFRESH_S.get(name, 0.0):
            return  # a chart over history: redrawn at most every few seconds, the tables every second
        self._built_at[name] = now
        target = self.status_pane if name == "status" else self.sections[name]
        try:
            new = build()
        except Exception as exc:  # noqa: BLE001 (one view's failure is shown in its place; the others still update)
            log.exception("dashboard: the %s view failed", name)
            new = [views.nothing_yet(f"Could not draw {name.replace('_', ' ')}: {type(exc).__name__}: {exc}", name)]
            inputs = ()  # tried again at the next refresh
        old = target.objects
        if len(old) == len(new) == 1 and _same_pane(old[0], new[0]):
            old[0].object = new[0].object  # the page's element stays and only its content changes: no flicker
        else:
            target.objects = new
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
        """The page: status and controls, accounts, positions, working orders and alerts; then tabs of fills,
        orders, costs (TCA), strategies and equity."""
        def card(title: str, *objects: Any, name: str) -> pn.Card:
            return pn.Card(*objects, title=title, collapsible=False, sizing_mode="stretch_width",
                           css_classes=["tb-card", f"tb-card-{name}"], margin=(5, 5))

        controls = pn.Row(*self.buttons.values(), css_classes=["tb-controls"])
        header = pn.pane.HTML(f'<h2 style="margin:4px 0">{html.escape(self.title)}</h2>', css_classes=["tb-title"])
        tabs = pn.Tabs(("Fills", self.sections["fills"]), ("Orders", self.sections["orders"]),
                       ("Costs (TCA)", self.sections["tca"]), ("Strategies", self.sections["stages"]),
                       ("Equity", self.sections["equity"]), dynamic=True, sizing_mode="stretch_width",
                       css_classes=["tb-tabs"])
        return pn.Column(
            header, self.status_pane, controls, self.confirm_row, self.control_note, self.message,
            card("Accounts", self.sections["accounts"], name="accounts"),
            card("Positions", self.sections["positions"], name="positions"),
            card("Working orders", self.sections["working_orders"], name="working-orders"),
            card("Alerts", self.sections["alerts"], name="alerts"),
            tabs, sizing_mode="stretch_width", css_classes=["tb-monitor"])


def build_app(source: MonitorSource, *, refresh_ms: int = REFRESH_MS, title: str = "tradebook monitor",
              stop: threading.Event | None = None) -> pn.viewable.Viewable:
    """The dashboard over ``source`` for one browser tab: painted once now, then refreshed while served
    (until the tab closes or ``stop`` is set)."""
    app = MonitorApp(source, refresh_ms=refresh_ms, title=title)
    app.refresh()
    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        app.start_refreshing(stop)
    return app.layout()
