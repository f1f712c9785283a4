"""Integrity of a migrated guest: what the programs said about lost state.

`anomalies` scans the time-stamped output of the backends, the QEMUs and the guest
consoles for known signs of lost or inconsistent state (see its PATTERNS and BENIGN).
"""

from vhostlm.integrity.anomalies import (
    BENIGN,
    FATAL,
    PATTERNS,
    WARNING,
    Anomaly,
    anomaly_failure,
    as_dicts,
    fatal,
    scan,
    scan_logs,
)

__all__ = [
    "BENIGN",
    "FATAL",
    "PATTERNS",
    "WARNING",
    "Anomaly",
    "anomaly_failure",
    "as_dicts",
    "fatal",
    "scan",
    "scan_logs",
]
