"""The write-ahead journal: exact Decimals, torn tails dropped, corruption refused, group commit."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest

from tradebook.store.journal import Journal, JournalCorruptError
from tradebook.errors import StoreError


def test_records_round_trip_exactly(tmp_path):
    with Journal(tmp_path / "j") as journal:
        assert journal.append({"kind": "fill", "qty": Decimal("0.00100"), "px": Decimal("61234.56"),
                               "ts": 1723161284087891267, "tags": ["a", {"fee": Decimal("-0.1")}]}) == 1
        journal.append({"kind": "ack", "ts": 2}, sync=False)
    with Journal(tmp_path / "j") as journal:
        records = list(journal.records())
        assert len(journal) == 2
    assert records[0] == {"kind": "fill", "qty": Decimal("0.00100"), "px": Decimal("61234.56"),
                          "ts": 1723161284087891267, "tags": ["a", {"fee": Decimal("-0.1")}]}
    assert str(records[0]["qty"]) == "0.00100"  # the exact text, trailing zero kept
    assert list(Journal(tmp_path / "j").records(1)) == [{"kind": "ack", "ts": 2}]


def test_a_torn_tail_is_dropped_and_the_file_truncated(tmp_path):
    path = tmp_path / "j"
    with Journal(path) as journal:
        journal.append({"n": 1})
        journal.append({"n": 2})
    whole = path.stat().st_size
    with open(path, "ab") as handle:
        handle.write(b'0badc0de {"n": 3')  # the process died mid-write
    with Journal(path) as journal:
        assert len(journal) == 2 and path.stat().st_size == whole
        journal.append({"n": 3})
    assert [r["n"] for r in Journal(path).records()] == [1, 2, 3]


def test_damage_before_the_end_is_refused(tmp_path):
    path = tmp_path / "j"
    with Journal(path) as journal:
        for n in range(3):
            journal.append({"n": n})
    data = bytearray(path.read_bytes())
    data[12] ^= 0x01  # flip a bit inside the first record
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorruptError, match="record 1 .* fails its checksum and more records follow"):
        Journal(path)


def test_group_commit_syncs_once(tmp_path, monkeypatch):
    calls = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd)))
    with Journal(tmp_path / "j") as journal:
        for n in range(5):
            journal.append({"n": n}, sync=False)
        assert calls == []
        assert journal.commit() is True and len(calls) == 1
        assert journal.commit() is False and len(calls) == 1  # nothing new: free
        journal.append({"n": 5})  # a synced append syncs at once
        assert len(calls) == 2 and journal.commit() is False


def test_closed_journal_refuses_appends_and_bad_values(tmp_path):
    journal = Journal(tmp_path / "j")
    with pytest.raises(StoreError, match="JSON values and Decimals"):
        journal.append({"when": object()})
    journal.close()
    with pytest.raises(StoreError, match="closed"):
        journal.append({"n": 1})


def test_reserved_space_is_free_space_and_trimmed_on_close(tmp_path):
    path = tmp_path / "j"
    journal = Journal(path, preallocate_bytes=1 << 16)
    journal.append({"n": 1})
    journal.append({"n": 2})
    records = path.read_bytes().rstrip(b"\0")
    assert path.stat().st_size >= 1 << 16 > len(records)  # written into reserved space, not appended
    reader = Journal(tmp_path / "copy", preallocate_bytes=0)  # an unrelated journal: no interference
    reader.close()
    # a process killed now leaves the NUL tail: reopening treats it as free space, not damage
    crashed = tmp_path / "crashed"
    crashed.write_bytes(path.read_bytes())
    with Journal(crashed) as reopened:
        assert [r["n"] for r in reopened.records()] == [1, 2]
        reopened.append({"n": 3})
    assert [r["n"] for r in Journal(crashed, preallocate_bytes=0).records()] == [1, 2, 3]
    journal.close()
    assert path.stat().st_size == len(records)  # close trims back to the records
