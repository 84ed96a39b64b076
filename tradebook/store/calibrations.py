"""Fill-model calibrations in the store: saved with the data they came from, read back by name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tradebook.errors import StoreError
from tradebook.model.time import now_ns


_CALIBRATION_COLUMNS = ("calibration_id, instrument_id, version, created_at_ns, data_start_ns, data_end_ns, "
                        "dataset_ids, params, diagnostics, provenance")


@dataclass(frozen=True)
class CalibrationRecord:
    """A stored fill-model calibration: which data it came from, its params JSON and fit diagnostics."""

    calibration_id: str  # "<instrument_id>@v<version>"
    instrument_id: str
    version: int
    created_at_ns: int
    data_start_ns: int
    data_end_ns: int
    dataset_ids: tuple[int, ...]
    params: str
    diagnostics: dict[str, Any]
    # '' for a model fitted from market data; for one corrected from realised fills, a JSON
    # object naming the calibration it corrected, the fills and the runs/accounts (migration 6)
    provenance: str = ""


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays appear in diagnostics computed with numpy
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"diagnostics value {value!r} of type {type(value).__name__} is not JSON-serialisable")


class CalibrationTables:
    """Save and read calibrations. Part of :class:`~tradebook.store.store.Store`: it works on the store's connection
    (``con``, ``transaction``, ``query``) like the rest of the class.
    """

    def save_calibration(
        self,
        instrument_id: str,
        params: str,
        *,
        data_start_ns: int,
        data_end_ns: int,
        dataset_ids: Iterable[int],
        diagnostics: dict[str, Any],
        provenance: str = "",
    ) -> CalibrationRecord:
        """Store a fitted fill model as the next version for ``instrument_id``.

        ``params`` is the model's JSON (``FillModel.to_json()``); it is checked to parse.
        Versions count up per instrument from 1 and are never overwritten, so a session
        that names ``BTCUSDT.BINANCE@v3`` always gets the same model.
        """
        self._require_writer()
        self._ensure_instrument(instrument_id)
        try:
            json.loads(params)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"calibration params for {instrument_id} are not JSON: {exc}") from exc
        if not data_start_ns <= data_end_ns:
            raise StoreError(f"calibration data range is empty or reversed: {data_start_ns} > {data_end_ns}")
        ids = sorted({int(i) for i in dataset_ids})
        diagnostics_text = json.dumps(diagnostics, sort_keys=True, default=_json_default)
        with self.transaction() as con:
            version = con.execute(
                "SELECT coalesce(max(version), 0) + 1 FROM calibrations WHERE instrument_id = ?", [instrument_id]
            ).fetchone()[0]
            calibration_id = f"{instrument_id}@v{version}"
            created = now_ns()
            con.execute(
                f"INSERT INTO calibrations ({_CALIBRATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [calibration_id, instrument_id, version, created, int(data_start_ns), int(data_end_ns),
                 json.dumps(ids), params, diagnostics_text, provenance],
            )
        return CalibrationRecord(calibration_id, instrument_id, int(version), created, int(data_start_ns),
                                 int(data_end_ns), tuple(ids), params, json.loads(diagnostics_text), provenance)

    def calibration(self, name: str) -> CalibrationRecord:
        """A stored calibration by id (``'BTCUSDT.BINANCE@v2'``) or the latest for an instrument id."""
        with self._lock:
            if "@v" in name:
                row = self.con.execute(f"SELECT {_CALIBRATION_COLUMNS} FROM calibrations WHERE calibration_id = ?",
                                       [name]).fetchone()
            else:
                row = self.con.execute(
                    f"SELECT {_CALIBRATION_COLUMNS} FROM calibrations WHERE instrument_id = ? "
                    "ORDER BY version DESC LIMIT 1", [name]
                ).fetchone()
        if row is None:
            known = self.calibrations()["calibration_id"].tolist()
            raise StoreError(f"no calibration {name!r} in {self.path}; stored: {known or 'none (run tradebook calibrate)'}")
        (calibration_id, instrument_id, version, created, start, end, ids, params, diagnostics, provenance) = row
        return CalibrationRecord(calibration_id, instrument_id, int(version), int(created), int(start), int(end),
                                 tuple(json.loads(ids)), params, json.loads(diagnostics), provenance)

    def calibrations(self, instrument_id: str | None = None) -> pd.DataFrame:
        """Stored calibrations (without their params), newest version last per instrument."""
        sql = ("SELECT calibration_id, instrument_id, version, created_at_ns, data_start_ns, data_end_ns, dataset_ids, "
               "provenance FROM calibrations")
        if instrument_id is None:
            return self.query(sql + " ORDER BY instrument_id, version")
        return self.query(sql + " WHERE instrument_id = ? ORDER BY version", [instrument_id])
