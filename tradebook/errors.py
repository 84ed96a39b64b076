"""The one error hierarchy of tradebook.

Every error tradebook raises on purpose derives from :class:`TradebookError`, so a
notebook can catch them all with one ``except`` and the CLI can print them as a
single readable line. Messages name what was wrong, where, and what was expected.
"""

from __future__ import annotations


class TradebookError(Exception):
    """Base of every error tradebook raises on purpose."""


class ConfigError(TradebookError, ValueError):
    """A configuration value is missing or invalid."""


class ConformanceError(TradebookError, ValueError):
    """A price or quantity does not conform to the instrument's tick, lot, minimum size or notional."""


class UnknownInstrumentError(TradebookError, KeyError):
    """An instrument id that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class OrderError(TradebookError, ValueError):
    """An order or order request that cannot be accepted (bad quantity, unknown order, wrong state)."""


class DataError(TradebookError, ValueError):
    """A market-data file or frame cannot be used as it is.

    ``source`` names the file (or frame); ``line`` the 1-based line of the file
    (the header is line 1, the first data row line 2) when one row is to blame.
    """

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None) -> None:
        self.source = source
        self.line = line
        where = ""
        if source is not None:
            where = f"{source}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        elif line is not None:
            where = f"line {line}: "
        super().__init__(where + message)


class SchemaError(DataError):
    """Columns missing, unexpected, or of the wrong type."""


class ExportError(TradebookError):
    """A notebook could not be executed or exported to HTML (tradebook.notebook)."""


class ReportError(TradebookError):
    """A report notebook is unknown, was given bad parameters, or failed in a cell (tradebook.reports)."""


class StoreError(TradebookError):
    """The DuckDB store cannot do what was asked."""


class StoreLockedError(StoreError):
    """Another process holds the store file."""


class AmbiguousReadError(StoreError):
    """A read would mix several recordings or bar sizes of one instrument; the message lists the choices."""


class MigrationError(StoreError):
    """The store's schema cannot be brought to the version this code expects."""


class SchemaBehindError(MigrationError):
    """A read-only open of a store whose schema is older than this code's: a read-write open migrates it."""


class SessionError(TradebookError):
    """A session cannot do what was asked in its current state (ended, not started, finished replay)."""


class SessionLockedError(SessionError):
    """Another session (in this process or another) holds the state folder of a paper run."""


class ControlError(SessionError):
    """A control (pause, resume, halt, flatten) asked of something that cannot act: a read-only monitor source."""


class SessionTimeoutError(SessionError, TimeoutError):
    """A wait on a session ran out of time; the message says what it waited for and the session's state."""


class MonitorServerError(TradebookError):
    """The dashboard server could not start (port taken, bad address) or did not stop in time."""


class ResearchError(TradebookError):
    """A research request (strategy, bars, backtest, sweep, statistics) cannot be done as asked."""


class SignalError(ResearchError):
    """A strategy's signals are misaligned with its bars or hold a value that is not a target position."""


class LookaheadError(ResearchError):
    """A strategy's signals use information from after the bar they are computed for."""


class TrailingWindowError(ResearchError):
    """No trailing window a session could hand to a strategy reproduces its full-history signals."""


class PromotionError(TradebookError):
    """A promotion request (gate review, stage change, override, reversion) cannot be done as asked."""


class VenueMappingError(TradebookError, ValueError):
    """A broker's value (order type, side, time in force, status, event) with no tradebook counterpart, or the reverse."""


class SandboxError(TradebookError):
    """A local broker sandbox server (tradebook.sandbox) could not start, stop or do what was asked."""


class VenueError(TradebookError):
    """A venue (broker or exchange) could not do what was asked; the subclass says whether the request reached it."""


class NotSentError(VenueError):
    """The request certainly did not reach the venue (refused locally, not connected): safe to send again under its id."""


class VenueRejectedError(VenueError):
    """The venue answered and refused: ``code`` is a RejectCode (tradebook.execution.oms), ``venue_code`` the broker's own."""

    def __init__(self, message: str, *, code: str, venue_code: str | None = None) -> None:
        self.code = code  # a RejectCode; typed loosely so this module imports nothing above it
        self.venue_code = venue_code
        super().__init__(message)


class OutcomeUnknownError(VenueError):
    """The request may have reached the venue (timeout, drop after sending): never resent blind, reconciled by id."""
