"""Who holds a store file: the holder file a writer leaves beside it, and the words for a lock error.

DuckDB lets one process hold a file read-write or several hold it read-only, never both,
and its own lock error names only a PID. A process that opens a store for writing
writes ``<store>.holder`` (JSON: pid, command, since, what it is doing) and removes it
when it closes; a holder file whose process is gone (or whose PID was reused since) is
stale and ignored. :func:`locked_error` turns DuckDB's error into one line naming the
holder: what it is, its PID and command, since when, and what to do.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from tradebook.errors import StoreLockedError
from tradebook.model.time import now_ns, ns_to_iso

_COMMAND_CHARS = 100  # a holder's command is shown up to this many characters

# RW stores of this process per holder file: the file goes when the last of them closes
_open_writers: dict[Path, int] = {}
_writers_lock = threading.Lock()


@dataclass(frozen=True)
class Holder:
    """A process holding a store: from its holder file, or from /proc when it left none (a reader)."""

    pid: int
    command: str
    since_ns: int | None
    purpose: str
    writing: bool | None  # None: unknown (no holder file)
    dashboard_url: str | None = None  # where the holder serves its monitor dashboard, when it does

    def describe(self) -> str:
        what = f"{self.purpose} in " if self.purpose else ""
        since = f" since {ns_to_iso(self.since_ns)[:19]}Z" if self.since_ns else ""
        how = {True: "for writing", False: "read-only", None: "open"}[self.writing]
        shown = f" (its dashboard: {self.dashboard_url})" if self.dashboard_url else ""
        return f"{what}PID {self.pid} `{self.command}` holds it {how}{since}{shown}"


def holder_path(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".holder")


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _COMMAND_CHARS else flat[: _COMMAND_CHARS - 3] + "..."


def own_command() -> str:
    """This process's command line, short: program names without their folders."""
    args = [a for a in sys.argv if a]
    if args:
        args[0] = Path(args[0]).name
    return _one_line(" ".join([Path(sys.executable).name, *args]))


def _process_start_ns(pid: int) -> int | None:
    """When ``pid`` started (Linux /proc), to tell a live holder from a reused PID; None when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # starttime, the 22nd field; fields here start at the 3rd
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return (boot * 1_000_000_000) + ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate it there; trust the holder file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _proc_command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    parts = [p.decode("utf-8", "replace") for p in raw.split(b"\0") if p]
    if parts:
        parts[0] = Path(parts[0]).name
    return _one_line(" ".join(parts)) or "?"


def read_holder(store_path: Path) -> Holder | None:
    """The live writer named by the holder file, or None (no file, unreadable, or stale)."""
    try:
        raw = json.loads(holder_path(store_path).read_text(encoding="utf-8"))
        pid, since = int(raw["pid"]), int(raw["since_ns"])
        command, purpose = str(raw.get("command", "?")), str(raw.get("purpose", ""))
        dashboard_url = str(raw["dashboard_url"]) if raw.get("dashboard_url") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(pid):
        return None
    started = _process_start_ns(pid)
    if started is not None and started > since + 2_000_000_000:  # the PID was reused after the writer died
        return None
    return Holder(pid, _one_line(command), since, _one_line(purpose), writing=True, dashboard_url=dashboard_url)


def process_holder(pid: int) -> Holder:
    """A holder known only by PID (DuckDB's message): its command and start time from /proc."""
    return Holder(pid, _proc_command(pid), _process_start_ns(pid), "", writing=None)


def write_holder(store_path: Path, purpose: str = "") -> None:
    """Record this process as the store's writer (atomically; one file however many RW stores it opens)."""
    key = holder_path(store_path).resolve()
    with _writers_lock:
        _open_writers[key] = _open_writers.get(key, 0) + 1
        if _open_writers[key] == 1 or purpose:
            _write(key, purpose)


def update_purpose(store_path: Path, purpose: str) -> None:
    key = holder_path(store_path).resolve()
    with _writers_lock:
        if _open_writers.get(key):
            _write(key, purpose)


def set_dashboard_url(store_path: Path, url: str | None) -> bool:
    """Name where this process serves the store's monitor dashboard (None: no more), for others' messages.

    Only while this process holds the store for writing (its holder file); returns whether it was written.
    """
    key = holder_path(store_path).resolve()
    with _writers_lock:
        if not _open_writers.get(key):
            return False
        own = _read_own_body(key)
        _write(key, str(own.get("purpose", "")) if own else "", dashboard_url=url)
        return True


def _write(path: Path, purpose: str, *, dashboard_url: str | None | bool = False) -> None:
    """Write the holder file; ``dashboard_url`` False keeps the URL the file names already."""
    body = {"pid": os.getpid(), "command": own_command(), "since_ns": now_ns(), "purpose": purpose}
    own = _read_own_body(path)
    if own is not None:  # keep the original start time (and the dashboard) when only the purpose changes
        body["since_ns"] = int(own["since_ns"])
    url = own.get("dashboard_url") if dashboard_url is False and own is not None else dashboard_url
    if url:
        body["dashboard_url"] = url
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(body), encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        # the holder file only names the writer in others' errors; never fail a store for it
        temporary.unlink(missing_ok=True)


def _read_own_body(path: Path) -> dict | None:
    """The holder file's contents when this process wrote it, else None."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        int(raw["since_ns"])
        return raw if int(raw["pid"]) == os.getpid() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read_own(path: Path) -> int | None:
    own = _read_own_body(path)
    return None if own is None else int(own["since_ns"])


def release_holder(store_path: Path) -> None:
    """This process closed one RW store; the holder file goes with the last one (if it is still ours)."""
    key = holder_path(store_path).resolve()
    with _writers_lock:
        left = _open_writers.get(key, 0) - 1
        if left > 0:
            _open_writers[key] = left
            return
        _open_writers.pop(key, None)
        if _read_own(key) is not None:
            key.unlink(missing_ok=True)


def locked_error(message: str, store_path: Path, *, want_write: bool) -> StoreLockedError:
    """One line for DuckDB's lock error on ``store_path``: who holds it and what to do."""
    match = re.search(r"PID (\d+)", message)
    pid = int(match.group(1)) if match else None
    holder = read_holder(store_path)
    if holder is None or (pid is not None and holder.pid != pid):
        holder = process_holder(pid) if pid is not None else None
        if holder is not None and not want_write:  # readers never block a reader: it is a writer
            holder = Holder(holder.pid, holder.command, holder.since_ns, holder.purpose, writing=True)
    who = holder.describe() if holder is not None else "another process holds it"
    if holder is not None and holder.writing:
        advice = "try again when it stops"
    elif want_write:
        advice = ("close the store there (store.close()) or wait for it to stop; readers and a writer cannot share "
                  "the file")
    else:
        advice = "try again when it stops, or read through that process"
    return StoreLockedError(f"{store_path} is in use: {who}; {advice} (DuckDB allows one writer or many readers)")
