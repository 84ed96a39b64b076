"""Notebook controls for a running session (ipywidgets): what it is doing, and pause, resume, halt, flatten.

``session.controls()`` shows the session's state, P&L and counts, refreshed in the
background while it runs, and four buttons. A button only arms its action: a
confirmation row asks again (with the reason the journal and the alert will carry),
and nothing happens until *Confirm*; *Cancel* drops it. The controls read and act
through :class:`tradebook.monitor.source.SessionSource`, as the dashboard does, so a
notebook cell and the dashboard behave alike. When the session ends, the refresher
shows its final state once more, disables the buttons saying why, and stops.
"""

from __future__ import annotations

import html
import logging
import threading
from typing import TYPE_CHECKING

import ipywidgets as widgets

from tradebook.errors import TradebookError
from tradebook.model.formatting import html_table
from tradebook.monitor.source import SessionSource

if TYPE_CHECKING:
    from tradebook.session import Session

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 1.0
ACTIONS = ("pause", "resume", "halt", "flatten")
_QUESTION = {
    "pause": "Pause the feed? Working orders stay working.",
    "resume": "Resume the feed and lift the kill switch (halt or reduce-only)?",
    "halt": "Halt: refuse every new order? Working orders stay.",
    "flatten": "Flatten: cancel every working order and close every position at market?",
}
_DEFAULT_REASON = {"pause": "", "resume": "", "halt": "halted from the notebook",
                   "flatten": "flattened from the notebook"}
# the status rows shown, in order: (status key, label)
_SHOWN = (("state", "state"), ("mode", "mode"), ("account", "account"), ("kill_switch", "kill switch"),
          ("kill_switch_reason", "why"), ("session_time", "session time"), ("equity", "equity"),
          ("realised_pnl", "realised P&L"), ("unrealised_pnl", "unrealised P&L"), ("orders", "orders"),
          ("working_orders", "working orders"), ("fills", "fills"), ("alerts", "alerts"))


class SessionControls(widgets.VBox):
    """State, P&L and counts of a session with pause, resume, halt and flatten behind a confirmation.

    ``interval_s``: how often the background refresher redraws the status while the session
    runs (0: never; call :meth:`refresh`). :meth:`close` stops the refresher.
    """

    def __init__(self, session: Session, *, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.session = session
        self.source = SessionSource(session)
        self.status_html = widgets.HTML()
        self.buttons = {name: widgets.Button(description=name.capitalize(), tooltip=_QUESTION[name],
                                             button_style="danger" if name in ("halt", "flatten") else "")
                        for name in ACTIONS}
        self.reason = widgets.Text(placeholder="reason (for the journal and the alert)",
                                   layout=widgets.Layout(width="24em"))
        self.question = widgets.HTML()
        self.confirm_button = widgets.Button(description="Confirm", button_style="warning")
        self.cancel_button = widgets.Button(description="Cancel")
        self.confirm_row = widgets.HBox([self.question, self.reason, self.confirm_button, self.cancel_button],
                                        layout=widgets.Layout(display="none"))
        self.message = widgets.HTML()
        self.armed: str | None = None  # the action waiting for its confirmation
        for name, button in self.buttons.items():
            button.on_click(lambda _button, name=name: self.arm(name))
        self.confirm_button.on_click(lambda _button: self.confirm())
        self.cancel_button.on_click(lambda _button: self.cancel())
        super().__init__([self.status_html, widgets.HBox(list(self.buttons.values())), self.confirm_row,
                          self.message])
        self._lock = threading.Lock()
        self._ended = False  # the session was seen ended (its message shown)
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self.refresh()
        if interval_s > 0:
            self._refresher = threading.Thread(target=self._refresh_loop, args=(interval_s,),
                                               name="tradebook-controls", daemon=True)
            self._refresher.start()

    # -- confirmation ------------------------------------------------------------------------------
    def arm(self, action: str) -> None:
        """A button was clicked: ask for confirmation (nothing is done yet)."""
        self.armed = action
        self.question.value = f"<b>{html.escape(_QUESTION[action])}</b>"
        self.reason.value = _DEFAULT_REASON[action]
        self.reason.layout.display = "" if action in ("halt", "flatten") else "none"
        self.confirm_button.description = f"Confirm {action}"
        self.confirm_row.layout.display = "flex"

    def cancel(self) -> None:
        """Drop the armed action."""
        if self.armed is not None:
            self.message.value = f"{html.escape(self.armed)} cancelled"
        self._disarm()

    def confirm(self) -> None:
        """Do the armed action; its result or the reason it was refused goes to :attr:`message`."""
        action, reason = self.armed, self.reason.value
        self._disarm()
        if action is None:
            return
        try:
            done = self._act(action, reason)
        except TradebookError as exc:
            refused = f"{action} refused: {exc}"
            self.message.value = f"<span style='color:#b00'>{html.escape(refused)}</span>"
        else:
            self.message.value = html.escape(done)
        self.refresh()

    def _act(self, action: str, reason: str) -> str:
        if action == "pause":
            self.source.pause()
            return "paused: the feed is held"
        if action == "resume":
            self.source.resume()
            return "resumed: the feed runs and the kill switch is normal"
        if action == "halt":
            self.source.halt(reason)
            return f"halted: {reason.strip()}"
        asked = self.source.flatten(reason)
        return f"flattening ({reason.strip()}): {len(asked)} order(s) so far (cancels asked, closing orders sent)"

    def _disarm(self) -> None:
        self.armed = None
        self.confirm_row.layout.display = "none"

    # -- refreshing --------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Redraw the status and enable the buttons the session's state allows."""
        with self._lock:
            status = self.session.status()
            rows = [(label, status.shown(key)) for key, label in _SHOWN if key in status]
            self.status_html.value = html_table(rows, caption="session")
            running = self.source.can_control
            state, kill = status["state"], status["kill_switch"]
            enabled = {"pause": running and state == "running",
                       "resume": running and (state == "paused" or kill != "normal"),
                       "halt": running and kill != "halted", "flatten": running}
            for name, button in self.buttons.items():
                button.disabled = not enabled[name]
            if not running and not self._ended:  # said once; a later refusal's message stays
                self._ended = True
                self._disarm()
                self.message.value = (f"the session is {html.escape(str(state))}: controls act on a running or "
                                      "paused session")

    @property
    def refreshing(self) -> bool:
        """Whether the background refresher still runs."""
        return self._refresher is not None and self._refresher.is_alive()

    def _refresh_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a failed redraw must not end the refresher; the next may work
                log.exception("refreshing the session controls failed")
                continue
            if not self.source.can_control:
                return  # the session ended: its final state is shown, nothing will change any more

    def close(self) -> None:
        """Stop the refresher and close the widgets."""
        self._stop.set()
        if self._refresher is not None and self._refresher is not threading.current_thread():
            self._refresher.join(timeout=5)
        super().close()


def session_controls(session: Session, *, interval_s: float = DEFAULT_INTERVAL_S) -> SessionControls:
    """The controls of ``session`` (what :meth:`tradebook.session.Session.controls` returns)."""
    return SessionControls(session, interval_s=interval_s)


__all__ = ["ACTIONS", "SessionControls", "session_controls"]
