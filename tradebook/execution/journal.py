"""Where the write-ahead journal used to live: it is :mod:`tradebook.store.journal` now, its record
format :mod:`tradebook.store.records` (issue 13: one home below the order manager, the paper venue and
the store). These names stay importable from here for code written before the move."""

from tradebook.store.journal import Journal, JournalCorruptError
from tradebook.store.records import BODY_OFFSET, decode_record, encode_record, journal_line

__all__ = ["BODY_OFFSET", "Journal", "JournalCorruptError", "decode_record", "encode_record", "journal_line"]
