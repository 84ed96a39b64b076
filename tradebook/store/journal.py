"""An append-only, fsync'd write-ahead journal: what "durable on disk" means on the order path.

A single-row DuckDB insert costs about 0.8 ms at the median and 3 ms at p99 on these
machines; an append to a file followed by ``fdatasync`` about 0.2 ms and 0.3 ms. So the
order path makes each intent and each fill durable in a journal *before* acting on it,
and a background flush copies journal records into DuckDB in batches. On restart the
journal is replayed and whatever DuckDB lacks is written again (records carry ids, so
applying one twice is harmless).

Format: one record per line, ``<crc32 hex8> <json>\\n``. A torn last line (the process
died mid-write) fails its checksum or has no newline and is dropped on open, and the
file is truncated back to the last whole record, so a crash never leaves a record that
half-exists. Any other damaged line is an error: the journal is the source of truth and
corrupt data is worse than no data.

The record format (the JSON body, Decimals as ``{"$d": "0.001"}`` so amounts survive exactly,
and the line around it) has its home in :mod:`tradebook.store.records`.

Group commit: ``append(record, sync=False)`` writes without waiting for the disk and
:meth:`Journal.commit` makes everything written so far durable with one ``fdatasync``
(``fdatasync`` covers the whole file). A writer that must be durable only before it
*speaks* (the paper venue: before it delivers events) appends unsynced and commits once
at that boundary, instead of paying one fsync per record.

Preallocation: a synced journal reserves disk space ahead of its end
(``preallocate_bytes``, 1 MiB at a time) by writing zeros there (the next sync commits
their blocks and the new size, once a MiB), and writes records into it in place. An ``fdatasync`` after an append that grows the
file must also commit the new size and block allocation to the filesystem's own
journal, and so must one after a write into space reserved with ``posix_fallocate``
(ext4 keeps it as unwritten extents until then); one that only overwrites written
blocks flushes the data alone. Measured on this machine's ext4, 25 kB a sync: 120 us at
p50 and 180 us at p99 into zeroed space, 190-200 and 300-900 us into fallocated space,
180-250 and 300-1,300 us appending (3 syncs per order). The reserved tail reads as NUL
bytes, which no record contains (JSON escapes control characters): on open, NULs after
the last record are free space, not damage, and :meth:`Journal.close` (or interpreter
exit) trims the file back to its records.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tradebook.errors import StoreError
from tradebook.store.records import BODY_OFFSET, decode_record, encode_record, journal_line, line_checks_out


class JournalCorruptError(StoreError):
    """A journal line in the middle of the file does not check out: refuse to guess."""


PREALLOCATE_BYTES = 1 << 20


def _trim_and_close(fd: int, extent: list[int]) -> None:
    """Cut the file back to its records (drop reserved space) and close it; at close or exit."""
    try:
        if extent[1] > extent[0]:
            os.ftruncate(fd, extent[0])
    finally:
        os.close(fd)


class Journal:
    """Append records durably; read them back in order.

    ``sync=False`` skips ``fdatasync`` (tests of logic, replays whose durability does
    not matter); the order path always syncs. One writer per file: the session that
    owns the store owns its journals. Thread-safe appends.
    """

    def __init__(self, path: str | Path, *, sync: bool = True, preallocate_bytes: int = PREALLOCATE_BYTES) -> None:
        if preallocate_bytes < 0:
            raise StoreError(f"preallocate_bytes must be >= 0, got {preallocate_bytes}")
        self.path = Path(path)
        self.sync = sync
        self.preallocate_bytes = preallocate_bytes if sync else 0  # only a synced journal gains from it
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._records, end = self._recover()
        self._dirty = False  # records written since the last fdatasync
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        # [end of the records, end of the file]: shared with the exit hook that trims the reserved tail
        self._extent = [end, end]
        self._trim = weakref.finalize(self, _trim_and_close, self._fd, self._extent)

    def _recover(self) -> tuple[int, int]:
        """Count whole records and find where they end, truncating a torn or reserved tail."""
        if not self.path.exists():
            return 0, 0
        data = self.path.read_bytes()
        size = len(data)
        if data.endswith(b"\0"):
            data = data.rstrip(b"\0")  # space reserved ahead of the records (see the module doc)
        good_end, count, position = 0, 0, 0
        while position < len(data):
            newline = data.find(b"\n", position)
            if newline < 0:
                break  # torn tail: no newline
            line = data[position:newline]
            if not line_checks_out(line):
                if newline + 1 < len(data):
                    raise JournalCorruptError(
                        f"journal {self.path}: record {count + 1} (byte {position}) fails its checksum and more "
                        "records follow it; refusing to guess what was written")
                break  # a damaged last line: torn write
            count += 1
            position = good_end = newline + 1
        if good_end < size:
            with open(self.path, "r+b") as handle:
                handle.truncate(good_end)
                handle.flush()
                os.fsync(handle.fileno())
        return count, good_end

    def __len__(self) -> int:
        return self._records

    @property
    def size(self) -> int:
        """Bytes of whole records in the file: where the next record will start."""
        return self._extent[0]

    def append(self, record: dict[str, Any], *, sync: bool | None = None) -> int:
        """Write ``record`` (durable unless ``sync=False``); returns its 1-based position in the journal.

        ``sync=False`` for one record suits what can be re-derived after a crash (an
        acknowledgement is asked for again); the next synced record makes it durable too.
        """
        return self.append_encoded((encode_record(record),), sync=sync)

    def append_encoded(self, bodies: Sequence[bytes], *, sync: bool | None = None) -> int:
        """Write records already encoded by :func:`encode_record`, in one ``pwrite``; returns the last position.

        For writers that keep the encoded form (the order manager hands the same bytes to
        DuckDB). All of ``bodies`` are written or none: a short write is rolled back.
        """
        if not bodies:
            with self._lock:
                return self._records
        data = b"".join(map(journal_line, bodies))
        with self._lock:
            if self._fd < 0:
                raise StoreError(f"journal {self.path} is closed")
            extent = self._extent
            end = extent[0]
            if end + len(data) > extent[1] and self.preallocate_bytes:
                grow = max(self.preallocate_bytes, len(data))
                try:
                    # zeros, not posix_fallocate: real blocks, so later syncs carry no metadata
                    extent[1] += os.pwrite(self._fd, bytes(grow), extent[1])
                except OSError:  # no room to reserve: plain appends still work
                    self.preallocate_bytes = 0
            written = os.pwrite(self._fd, data, end)
            if written != len(data):  # a short write (disk full): never leave half a record behind
                if end + written > extent[1]:
                    os.ftruncate(self._fd, end)
                else:
                    os.pwrite(self._fd, b"\0" * written, end)
                raise StoreError(f"journal {self.path}: wrote {written} of {len(data)} bytes (disk full?)")
            extent[0] = end + len(data)
            extent[1] = max(extent[1], extent[0])
            if self.sync if sync is None else (sync and self.sync):
                os.fdatasync(self._fd)
                self._dirty = False
            else:
                self._dirty = True
            self._records += len(bodies)
            return self._records

    def commit(self) -> bool:
        """Make every record written so far durable (one ``fdatasync``); returns whether one was needed.

        Free when nothing was appended unsynced since the last sync, and a no-op for a
        ``sync=False`` journal.
        """
        with self._lock:
            if not self._dirty or not self.sync or self._fd < 0:
                return False
            os.fdatasync(self._fd)
            self._dirty = False
            return True

    def records(self, start: int = 0) -> Iterator[dict[str, Any]]:
        """Every record from position ``start`` (0-based) on, as written."""
        for body in self.encoded(start):
            yield decode_record(body)

    def encoded(self, start: int = 0) -> Iterator[bytes]:
        """Every record from position ``start`` (0-based) on, as the bytes :func:`encode_record` made."""
        with open(self.path, "rb") as handle:
            for index, line in enumerate(handle):
                if index < start:
                    continue
                line = line.rstrip(b"\n")
                if not line_checks_out(line):
                    return  # a record being written right now
                yield line[BODY_OFFSET:]

    def close(self) -> None:
        """Trim the reserved tail and close; the records are already on disk."""
        with self._lock:
            if self._fd >= 0:
                self._trim()  # runs _trim_and_close once
                self._fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
