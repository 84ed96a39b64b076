"""Paper runs: a named paper account with its state, its results, and the calls to resume, reset or start fresh.

    session = tb.Session(store, calibrations=[...], feed=feed, run="ma-cross")   # resumes "ma-cross" if it exists
    tb.paper.runs(store)                      # every run of this store: state folder, session time, orders, fills
    tb.paper.reset(store, "ma-cross")         # forget it: its state folder and its rows in the store
    tb.Session(..., run="ma-cross", reset=True)   # the same, then start it over
    tb.Session(..., run=tb.paper.new_run())   # a fresh run with a unique name

A run's state folder is ``<store path>.runs/<run>/`` (the order manager's journal, the
paper venue's journal, the session journal, and the lock); its account id is the run
name, so its orders, fills and positions in the store carry it. Naming the same run
again resumes it where it stopped: nothing durable is sent twice and the replay goes on
from its last step. Resetting removes the folder and the run's rows in one go, so the
same signal ids can trade again; a run another session holds is never reset.

One session per state folder: :class:`StateLock` (an ``flock`` on ``session.lock`` in
the folder, with who holds it written inside for the message) is taken before a session
writes anything and released when it ends; the kernel releases it if the process dies.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

import pandas as pd

from tradebook.errors import ConfigError, SessionLockedError, StoreError
from tradebook.model.time import ns_to_iso

DEFAULT_RUN = "default"
LOCK_NAME = "session.lock"
SESSION_JOURNAL = "session.journal"
OMS_JOURNAL = "oms.journal"
FLUSH_PREFIX = "tb-flush-"  # the store's temporary folders for a journal copy: tb-flush-<pid>-<random>
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_ORDER_PATH_TABLES = ("orders", "order_events", "fills", "positions", "alerts", "journal_offsets")


def check_run_name(run: Any) -> str:
    """``run`` if it can name a folder on every platform: letters, digits, ``.``, ``_``, ``-``; else ConfigError."""
    if not isinstance(run, str) or not _RUN_NAME.fullmatch(run):
        raise ConfigError(f"run name {run!r}: expected 1-100 letters, digits, '.', '_' or '-', starting with a "
                          "letter or digit (tb.paper.new_run() makes a fresh one)")
    return run


def runs_dir(store_path: str | Path) -> Path:
    """Where a store keeps its paper runs: ``<store path>.runs``."""
    return Path(f"{store_path}.runs")


def run_dir(store_path: str | Path, run: str) -> Path:
    """The state folder of paper run ``run`` of the store at ``store_path``."""
    return runs_dir(store_path) / check_run_name(run)


def new_run(prefix: str = "run") -> str:
    """A fresh name for a paper run (``run-20260101T120000-3f2a``): UTC time plus a random suffix."""
    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S")
    return check_run_name(f"{prefix}-{stamp}-{os.urandom(2).hex()}")


def oms_journal_name(store_path: str | Path, state_dir: str | Path) -> str:
    """The name under which the store keeps its copy of a session's order journal.

    The journal's path relative to the store's folder (absolute when outside it), so that
    several sessions (state directories) can write into one store without mixing their
    journal offsets, and moving a workspace folder as a whole keeps the names.
    """
    journal = Path(os.path.abspath(Path(state_dir) / OMS_JOURNAL))
    base = Path(os.path.abspath(store_path)).parent
    try:
        return journal.relative_to(base).as_posix()
    except ValueError:
        return journal.as_posix()


# -- one session per state folder -------------------------------------------------------------
def _close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class StateLock:
    """An exclusive ``flock`` on ``<state folder>/session.lock``, holding who took it.

    Taken at construction or :class:`~tradebook.errors.SessionLockedError` naming the
    holder (pid, host, run, since when). flock locks belong to an open file, so a second
    session in the same process is refused as surely as one in another process; the
    kernel drops the lock when the process dies, so a killed session never leaves its
    folder locked.
    """

    def __init__(self, state_dir: str | Path, run: str) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for attempt in range(6):  # a moment's grace: a probe (is_locked) or a holder letting go right now
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if attempt == 5:
                        raise
                    time.sleep(0.05)
        except BlockingIOError:
            os.close(fd)
            raise SessionLockedError(f"state folder {self.path.parent} is in use by {describe_holder(self.path)}; "
                                     "stop that session first (session.stop()), or name another run") from None
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "run": run,
                  "started": ns_to_iso(time.time_ns())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._finalizer = weakref.finalize(self, _close_fd, fd)  # closing the file releases the lock

    @property
    def held(self) -> bool:
        return self._finalizer.alive

    def release(self) -> None:
        """Drop the lock (idempotent). The file stays: it is how the next holder is named."""
        if self._finalizer.alive:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            self._finalizer()


def describe_holder(lock_path: str | Path) -> str:
    """Who holds a state folder, from the lock file: 'the session of pid 123 on host (run x) since ...'."""
    try:
        holder = json.loads(Path(lock_path).read_text() or "{}")
    except (OSError, ValueError):
        holder = {}
    if not holder:
        return "another session (its lock names no holder yet)"
    pid = holder.get("pid")
    here = " (this process: an earlier Session still running or not stopped)" if pid == os.getpid() else ""
    return (f"the session of pid {pid}{here} on {holder.get('host', '?')}, run {holder.get('run', '?')!r}, "
            f"since {holder.get('started', '?')}")


def is_locked(state_dir: str | Path) -> bool:
    """Whether a session holds ``state_dir`` now (probed without taking it)."""
    path = Path(state_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the shared probe too
    return False


# -- reset ------------------------------------------------------------------------------------
def reset(store: Any, run: str) -> dict[str, int]:
    """Forget paper run ``run``: its rows in the store (one transaction), then its state folder.

    Removes the run's orders, order events, fills, positions and alerts (account id =
    the run name), and the store's offset in its order journal, so that the same signal
    ids trade again from scratch. Refused (SessionLockedError) while a session holds the
    run, and (ConfigError) for a run with live orders. Returns the rows removed per table.
    """
    _check_store(store)
    state_dir = run_dir(store.path, run)
    made_here = not state_dir.exists()  # only rows left in the store (the folder was deleted by hand), or none
    lock = StateLock(state_dir, run)
    try:
        return reset_locked(store, run, state_dir, lock)
    finally:
        lock.release()
        if made_here:
            shutil.rmtree(state_dir, ignore_errors=True)


def reset_locked(store: Any, run: str, state_dir: Path, lock: StateLock) -> dict[str, int]:
    """:func:`reset` for a caller that already holds the run's lock (a Session built with ``reset=True``)."""
    if not lock.held:
        raise SessionLockedError(f"resetting run {run!r} needs its lock; it was released")
    journal = oms_journal_name(store.path, state_dir)
    live = store.query("SELECT count(*) AS n FROM orders WHERE account_id = ? AND mode <> 'paper'", [run])
    if int(live["n"].iloc[0]):
        raise ConfigError(f"run {run!r} holds {int(live['n'].iloc[0])} live orders; only a paper run can be reset")
    removed: dict[str, int] = {}
    where = {
        "order_events": ("client_order_id IN (SELECT client_order_id FROM orders WHERE account_id = ?)", [run]),
        "fills": ("account_id = ?", [run]),
        "positions": ("account_id = ?", [run]),
        "alerts": ("source = ?", [journal]),
        "journal_offsets": ("journal = ?", [journal]),
        "orders": ("account_id = ?", [run]),  # last: order_events finds its rows through it
    }
    with store.transaction() as con:
        for table, (condition, params) in where.items():
            removed[table] = int(con.execute(f"SELECT count(*) FROM {table} WHERE {condition}", params).fetchone()[0])
            con.execute(f"DELETE FROM {table} WHERE {condition}", params)
    # after the store: a crash in between leaves the journals, from which the next session
    # copies the rows again (the reverse would leave the store ahead of an empty journal)
    for entry in state_dir.iterdir() if state_dir.exists() else ():
        if entry.name == LOCK_NAME:
            continue  # ours, held until the caller is done
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    return removed


# -- listing ----------------------------------------------------------------------------------
def _session_journal_summary(path: Path) -> dict[str, Any]:
    """Last session time, whether the replay finished, and the kill switch, read from the session journal.

    Read as text (never opened as a Journal: that would trim a running session's file).
    """
    summary: dict[str, Any] = {"session_time": None, "finished": False, "kill_switch": "normal"}
    try:
        handle = open(path, "rb")
    except OSError:
        return summary
    with handle:
        for line in handle:
            body = line.rstrip(b"\n\0")  # "<crc32 hex8> <json>"
            try:
                record = json.loads(body[9:])
            except ValueError:
                continue  # a torn last line or reserved space
            kind = record.get("kind")
            if kind == "batch":
                summary["session_time"] = record["end_ns"]
            elif kind == "finished":
                summary["finished"] = True
            elif kind == "kill_switch":
                summary["kill_switch"] = record["mode"]
    return summary


def runs(store: Any) -> pd.DataFrame:
    """The paper runs of ``store``: one row per state folder under ``<store path>.runs/``.

    Columns: ``run``, ``state_dir``, ``in_use`` (a session holds it now), ``session_time``
    (where its replay got, UTC), ``finished`` (the replay ran out), ``kill_switch``
    (normal, halted or reduce_only, as the next session will start), ``orders`` and
    ``fills`` (rows of its account in the store).
    """
    _check_store(store)
    columns = ["run", "state_dir", "in_use", "session_time", "finished", "kill_switch", "orders", "fills"]
    folder = runs_dir(store.path)
    names = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.exists() else []
    counts = {}
    if names:
        frame = store.query("SELECT account_id, count(*) AS orders, "
                            "(SELECT count(*) FROM fills f WHERE f.account_id = o.account_id) AS fills "
                            "FROM orders o GROUP BY account_id")
        counts = {row.account_id: (int(row.orders), int(row.fills)) for row in frame.itertuples()}
    rows = []
    for name in names:
        state_dir = folder / name
        summary = _session_journal_summary(state_dir / SESSION_JOURNAL)
        when = summary["session_time"]
        orders, fills = counts.get(name, (0, 0))
        rows.append((name, str(state_dir), is_locked(state_dir),
                     pd.Timestamp(when, unit="ns", tz="UTC") if when is not None else pd.NaT,
                     summary["finished"], summary["kill_switch"], orders, fills))
    return pd.DataFrame(rows, columns=columns)


# -- temporary folders left by a crash -----------------------------------------------------------
def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), None when it is gone, 0.0 when alive but unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start in ticks since boot
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError, StopIteration):
        pass  # no /proc here: ask the kernel whether the pid exists
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return 0.0


def clean_flush_leftovers(directory: str | Path | None = None) -> list[Path]:
    """Remove the store's ``tb-flush-<pid>-*`` temporary folders that a killed process left behind.

    A folder is removed when its process is gone, or when it is older than the process
    now holding that pid (the pid was reused). A folder of a running flush is left alone.
    Returns the folders removed.
    """
    base = Path(directory) if directory is not None else Path(tempfile.gettempdir())
    removed = []
    try:
        entries = list(base.glob(FLUSH_PREFIX + "*"))
    except OSError:
        return removed
    for entry in entries:
        match = re.fullmatch(re.escape(FLUSH_PREFIX) + r"(\d+)-.*", entry.name)
        if not match or not entry.is_dir():
            continue  # not one of ours by name: never guess
        pid = int(match.group(1))
        try:
            made = entry.stat().st_mtime
        except FileNotFoundError:
            continue  # its flush just finished
        started = _process_start(pid)
        if started is not None and (pid == os.getpid() or made >= started - 1):
            continue  # its process is alive and made it
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _check_store(store: Any) -> None:
    if not hasattr(store, "path") or not hasattr(store, "transaction"):
        raise StoreError(f"expected an open tradebook Store (tb.open_store(path)), got {type(store).__name__}")
