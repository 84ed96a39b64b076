"""Time: int64 UTC nanoseconds; naive values refused, offsets honoured, nanoseconds kept."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradebook.errors import DataError
from tradebook.model import NS_PER_DAY, NS_PER_SECOND, ns_to_iso, to_ns

BTC_L1_FIRST_NS = 1723161254087891268  # first ts_ns of the 2024 Binance L1 file (MANIFEST)
YEAR_2100_NS = 4_102_444_800 * NS_PER_SECOND  # 2100-01-01T00:00Z


class TestNaiveRefused:
    @pytest.mark.parametrize(
        "value",
        [
            "2024-01-02T10:00:00",
            "2024-01-02 10:00:00.123456789",
            "2024-01-02",
            dt.datetime(2024, 1, 2, 10, 0),
            pd.Timestamp("2024-01-02T10:00:00"),
        ],
        ids=["iso-str", "space-str-ns", "date-only", "datetime", "timestamp"],
    )
    def test_naive_raises_data_error_mentioning_naive(self, value):
        with pytest.raises(DataError) as info:
            to_ns(value)
        assert "naive" in str(info.value)
        assert "'Z'" in str(info.value) or "offset" in str(info.value)


class TestAwareAccepted:
    def test_z_suffix(self):
        assert to_ns("1970-01-01T00:00:00Z") == 0
        assert to_ns("2024-01-02T10:00:00Z") == 1704189600 * NS_PER_SECOND

    def test_nanoseconds_are_pinned(self):
        # pandas 3 keeps the parsed unit; the value must still come back in ns, every digit kept.
        assert to_ns("2024-08-08T23:54:14.087891268Z") == BTC_L1_FIRST_NS
        assert to_ns("2024-08-08T23:54:14.087Z") == 1723161254087000000
        assert to_ns("2024-08-08T23:54:14.087891Z") == 1723161254087891000
        assert to_ns("2024-08-08T23:54:14Z") == 1723161254000000000

    @pytest.mark.parametrize(
        "text",
        [
            "2024-01-02T11:00:00+01:00",
            "2024-01-02T05:00:00-05:00",
            "2024-01-02T15:30:00+05:30",
            "2024-01-02T10:00:00+00:00",
            "2024-01-02T11:00:00+0100",
        ],
    )
    def test_offsets_are_converted_to_utc(self, text):
        assert to_ns(text) == to_ns("2024-01-02T10:00:00Z")

    def test_offset_with_nanoseconds(self):
        assert to_ns("2024-08-09T01:54:14.087891268+02:00") == BTC_L1_FIRST_NS

    def test_aware_datetime_and_timestamp(self):
        assert to_ns(dt.datetime(2024, 1, 2, 10, tzinfo=dt.UTC)) == to_ns("2024-01-02T10:00:00Z")
        assert to_ns(dt.datetime(2024, 1, 2, 5, tzinfo=ZoneInfo("America/New_York"))) == to_ns("2024-01-02T10:00:00Z")
        assert to_ns(dt.datetime(2024, 7, 2, 6, tzinfo=ZoneInfo("America/New_York"))) == to_ns("2024-07-02T10:00:00Z")
        assert to_ns(pd.Timestamp(BTC_L1_FIRST_NS, unit="ns", tz="UTC")) == BTC_L1_FIRST_NS
        assert to_ns(pd.Timestamp("2024-08-08T18:54:14.087891268", tz="America/Chicago")) == BTC_L1_FIRST_NS

    def test_int_nanoseconds_pass_through(self):
        assert to_ns(BTC_L1_FIRST_NS) == BTC_L1_FIRST_NS
        assert to_ns(np.int64(BTC_L1_FIRST_NS)) == BTC_L1_FIRST_NS
        assert isinstance(to_ns(np.int64(5)), int)


class TestRefused:
    @pytest.mark.parametrize(
        "value",
        [YEAR_2100_NS, YEAR_2100_NS + 1, 2**63 - 1, -1, -BTC_L1_FIRST_NS, np.int64(-5)],
        ids=["2100", "2100+1ns", "int64-max", "minus-1", "negative", "np-negative"],
    )
    def test_out_of_range_ns(self, value):
        with pytest.raises(DataError, match="outside 1970..2100"):
            to_ns(value)

    def test_range_edges(self):
        assert to_ns(0) == 0
        assert to_ns(YEAR_2100_NS - 1) == YEAR_2100_NS - 1

    @pytest.mark.parametrize("text", ["2100-01-01T00:00:00Z", "2150-06-01T00:00:00+00:00", "1969-12-31T23:59:59Z"])
    def test_out_of_range_iso(self, text):
        with pytest.raises(DataError, match="outside 1970..2100"):
            to_ns(text)

    @pytest.mark.parametrize("value", [True, False, 1.7e18, None, b"2024-01-02T10:00:00Z", "not a time", ""])
    def test_wrong_types_and_garbage(self, value):
        with pytest.raises(DataError):
            to_ns(value)


class TestIso:
    def test_ns_to_iso_has_nanoseconds_and_z(self):
        assert ns_to_iso(BTC_L1_FIRST_NS) == "2024-08-08T23:54:14.087891268Z"
        assert ns_to_iso(0) == "1970-01-01T00:00:00Z"

    def test_constants(self):
        assert NS_PER_SECOND == 1_000_000_000
        assert NS_PER_DAY == 86_400 * NS_PER_SECOND


@given(st.integers(min_value=0, max_value=YEAR_2100_NS - 1))
def test_iso_round_trip_is_exact(ns):
    assert to_ns(ns_to_iso(ns)) == ns
