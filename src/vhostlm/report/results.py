"""The results model of a run and its results.json form.

Typed dataclasses for runs, cases and steps; JSON written atomically and read back with a
hand-written schema check so a bad file gives one clear line instead of a traceback.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

from vhostlm.errors import UsageError

Verdict = Literal["pass", "fail", "error", "skip"]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)
ACCELS = ("kvm", "tcg", "")  # "" = not probed yet (the run stopped before the KVM probe)

Figure = float | int | str


def now_iso() -> str:
    """Current local time as ISO 8601 with its UTC offset, for `RunResult.started`."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


@dataclass
class StepResult:
    """One named step of a case (e.g. a step of the seed plan) with its own verdict."""

    name: str
    verdict: Verdict
    detail: str = ""
    duration_s: float = 0.0
    figures: dict[str, Figure] = field(default_factory=dict)


@dataclass
class MigrationFigures:
    """QEMU's own numbers for one migration, from QMP `query-migrate`."""

    status: str = ""
    total_time_ms: int = 0
    downtime_ms: int = 0
    setup_time_ms: int = 0
    ram_transferred_bytes: int = 0
    expected_downtime_ms: int = 0
    mbps: float = 0.0
    dirty_sync_count: int = 0

    @classmethod
    def from_query_migrate(cls, reply: Mapping[str, Any]) -> MigrationFigures:
        """Build from a `query-migrate` return value (a `{"return": ...}` wrapper is unwrapped).

        Keys QEMU leaves out (e.g. `downtime` while still active) become 0.
        """
        inner = reply.get("return")
        if isinstance(inner, Mapping):
            reply = inner
        ram = reply.get("ram")
        if not isinstance(ram, Mapping):
            ram = {}
        status = reply.get("status")
        return cls(
            status=status if isinstance(status, str) else "",
            total_time_ms=_as_int(reply.get("total-time")),
            downtime_ms=_as_int(reply.get("downtime")),
            setup_time_ms=_as_int(reply.get("setup-time")),
            ram_transferred_bytes=_as_int(ram.get("transferred")),
            expected_downtime_ms=_as_int(reply.get("expected-downtime")),
            mbps=_as_float(ram.get("mbps")),
            dirty_sync_count=_as_int(ram.get("dirty-sync-count")),
        )


@dataclass
class TrafficFigures:
    """Tester packets sent and guest packets received before, during and after migration."""

    sent: int = 0
    received_before: int = 0
    received_during: int = 0
    received_after: int = 0


@dataclass
class CaseResult:
    """One test case of the plan: its steps, verdict and figures."""

    name: str
    verdict: Verdict = "pass"
    reason: str = ""
    duration_s: float = 0.0
    steps: list[StepResult] = field(default_factory=list)
    migration: MigrationFigures = field(default_factory=MigrationFigures)
    traffic: TrafficFigures = field(default_factory=TrafficFigures)
    phases: dict[str, float] = field(default_factory=dict)
    measure: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def finish(self) -> None:
        """Derive the verdict from the steps unless one was set explicitly (not "pass").

        error beats fail beats pass; all steps skipped (or none at all) gives skip.
        """
        if self.verdict != "pass":
            return
        for wanted in ("error", "fail"):
            bad = next((s for s in self.steps if s.verdict == wanted), None)
            if bad is not None:
                self.verdict = wanted
                if not self.reason:
                    self.reason = f"{bad.name}: {bad.detail}" if bad.detail else bad.name
                return
        if all(s.verdict == "skip" for s in self.steps):
            self.verdict = "skip"
            if not self.reason:
                self.reason = "all steps skipped" if self.steps else "no steps ran"

    @property
    def ok(self) -> bool:
        """True when neither the case nor any of its steps failed or errored."""
        bad = ("fail", "error")
        return self.verdict not in bad and all(s.verdict not in bad for s in self.steps)


@dataclass
class RunResult:
    """A whole run: environment, versions and every case; serialised as results.json."""

    started: str
    duration_s: float = 0.0
    accel: str = ""
    testbed: str = "lab"
    cases: list[CaseResult] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    host: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    output_dir: str = ""
    run_id: str = ""
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 when every case passed or was skipped, else 1 (a failed step counts as failed)."""
        return 0 if all(case.ok for case in self.cases) else 1

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (plain dicts and lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> RunResult:
        """Inverse of `to_dict`; raises ValueError naming the first schema problem."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        problems = validate_results(data)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ValueError(problems[0] + more)
        return _run_from_dict(data)


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 `text` to a temp file beside `path`, fsync, rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_results(result: RunResult, path: Path) -> None:
    """Write `result` as JSON (indent 2) atomically: a temp file renamed over `path`."""
    write_text_atomic(path, json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n")


def load_results(path: Path) -> RunResult:
    """Read a results.json; raises UsageError (one line naming the file) if it is unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{path}: cannot read results file: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: results file is not UTF-8 text") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not valid JSON: {e.msg} at line {e.lineno}") from e
    try:
        return RunResult.from_dict(data)
    except ValueError as e:
        raise UsageError(f"{path}: {e}") from e


# --- schema check -------------------------------------------------------------------------

_Kind = tuple[str, Callable[[Any], bool]]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_STR: _Kind = ("a string", lambda v: isinstance(v, str))
_INT: _Kind = ("an integer", _is_int)
_NUM: _Kind = ("a number", _is_number)
_LIST: _Kind = ("a list", lambda v: isinstance(v, list))
_OBJ: _Kind = ("an object", lambda v: isinstance(v, dict))
_STR_MAP: _Kind = (
    "an object of strings",
    lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
)
_NUM_MAP: _Kind = (
    "an object of numbers",
    lambda v: isinstance(v, dict) and all(_is_number(x) for x in v.values()),
)
_FIGURE_MAP: _Kind = (
    "an object of numbers or strings",
    lambda v: isinstance(v, dict) and all(_is_number(x) or isinstance(x, str) for x in v.values()),
)
_STR_LIST: _Kind = (
    "a list of strings",
    lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
)

_RUN_REQUIRED = {
    "started": _STR,
    "duration_s": _NUM,
    "accel": _STR,
    "testbed": _STR,
    "cases": _LIST,
}
_RUN_OPTIONAL = {
    "versions": _STR_MAP,
    "host": _STR_MAP,
    "command": _STR_LIST,
    "output_dir": _STR,
    "run_id": _STR,
    "phases": _NUM_MAP,
}
_CASE_REQUIRED = {
    "name": _STR,
    "verdict": _STR,
    "reason": _STR,
    "duration_s": _NUM,
    "steps": _LIST,
    "migration": _OBJ,
    "traffic": _OBJ,
}
_CASE_OPTIONAL = {"phases": _NUM_MAP, "measure": _OBJ, "options": _OBJ}
_STEP_REQUIRED = {"name": _STR, "verdict": _STR, "detail": _STR}
_STEP_OPTIONAL = {"duration_s": _NUM, "figures": _FIGURE_MAP}
_MIGRATION_REQUIRED = {
    "status": _STR,
    "total_time_ms": _INT,
    "downtime_ms": _INT,
    "setup_time_ms": _INT,
    "ram_transferred_bytes": _INT,
}
_MIGRATION_OPTIONAL = {"expected_downtime_ms": _INT, "mbps": _NUM, "dirty_sync_count": _INT}
_TRAFFIC_REQUIRED = {
    "sent": _INT,
    "received_before": _INT,
    "received_during": _INT,
    "received_after": _INT,
}


def validate_results(data: dict[str, Any]) -> list[str]:
    """Problems of a results.json document (missing key, wrong type, bad verdict); [] if fine."""
    problems: list[str] = []
    if not _check(data, "", _RUN_REQUIRED, _RUN_OPTIONAL, problems):
        return problems
    if _STR[1](data.get("started")) and not _is_iso_with_tz(data["started"]):
        problems.append(f"started: {data['started']!r} is not ISO 8601 with a timezone")
    if _STR[1](data.get("accel")) and data["accel"] not in ACCELS:
        problems.append(f"accel: {data['accel']!r} is not one of kvm, tcg")
    for i, case in enumerate(data["cases"] if isinstance(data.get("cases"), list) else []):
        where = f"cases[{i}]"
        if not _check(case, where, _CASE_REQUIRED, _CASE_OPTIONAL, problems):
            continue
        _check_verdict(case, where, problems)
        for j, step in enumerate(case["steps"] if isinstance(case.get("steps"), list) else []):
            if _check(step, f"{where}.steps[{j}]", _STEP_REQUIRED, _STEP_OPTIONAL, problems):
                _check_verdict(step, f"{where}.steps[{j}]", problems)
        for key, req, opt in (
            ("migration", _MIGRATION_REQUIRED, _MIGRATION_OPTIONAL),
            ("traffic", _TRAFFIC_REQUIRED, {}),
        ):
            if isinstance(case.get(key), dict):
                _check(case[key], f"{where}.{key}", req, opt, problems)
    return problems


def _check(
    obj: Any,
    where: str,
    required: dict[str, _Kind],
    optional: dict[str, _Kind],
    problems: list[str],
) -> bool:
    """Append problems of one object's keys; False if `obj` is not an object at all."""
    if not isinstance(obj, dict):
        problems.append(f"{where or 'document'}: expected an object, got {type(obj).__name__}")
        return False
    prefix = f"{where}." if where else ""
    for key, (what, ok) in required.items():
        if key not in obj:
            problems.append(f"{prefix}{key}: missing")
        elif not ok(obj[key]):
            problems.append(f"{prefix}{key}: expected {what}, got {obj[key]!r:.60}")
    for key, (what, ok) in optional.items():
        if key in obj and not ok(obj[key]):
            problems.append(f"{prefix}{key}: expected {what}, got {obj[key]!r:.60}")
    return True


def _check_verdict(obj: dict[str, Any], where: str, problems: list[str]) -> None:
    verdict = obj.get("verdict")
    if isinstance(verdict, str) and verdict not in VERDICTS:
        problems.append(f"{where}.verdict: {verdict!r} is not one of {', '.join(VERDICTS)}")


def _is_iso_with_tz(text: str) -> bool:
    try:
        return datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        return False


# --- construction from validated data -----------------------------------------------------


def _as_int(v: Any) -> int:
    if _is_int(v):
        return int(v)
    if isinstance(v, float) and math.isfinite(v):
        return int(v)
    return 0


def _as_float(v: Any) -> float:
    return float(v) if _is_number(v) else 0.0


def _run_from_dict(d: dict[str, Any]) -> RunResult:
    return RunResult(
        started=d["started"],
        duration_s=float(d["duration_s"]),
        accel=d["accel"],
        testbed=d["testbed"],
        cases=[_case_from_dict(c) for c in d["cases"]],
        versions=dict(d.get("versions", {})),
        host=dict(d.get("host", {})),
        command=list(d.get("command", [])),
        output_dir=d.get("output_dir", ""),
        run_id=d.get("run_id", ""),
        phases=dict(d.get("phases", {})),
    )


def _case_from_dict(d: dict[str, Any]) -> CaseResult:
    m, t = d["migration"], d["traffic"]
    return CaseResult(
        name=d["name"],
        verdict=d["verdict"],
        reason=d["reason"],
        duration_s=float(d["duration_s"]),
        steps=[
            StepResult(
                name=s["name"],
                verdict=s["verdict"],
                detail=s["detail"],
                duration_s=float(s.get("duration_s", 0.0)),
                figures=dict(s.get("figures", {})),
            )
            for s in d["steps"]
        ],
        migration=MigrationFigures(
            status=m["status"],
            total_time_ms=m["total_time_ms"],
            downtime_ms=m["downtime_ms"],
            setup_time_ms=m["setup_time_ms"],
            ram_transferred_bytes=m["ram_transferred_bytes"],
            expected_downtime_ms=m.get("expected_downtime_ms", 0),
            mbps=float(m.get("mbps", 0.0)),
            dirty_sync_count=m.get("dirty_sync_count", 0),
        ),
        traffic=TrafficFigures(**{k: t[k] for k in _TRAFFIC_REQUIRED}),
        phases={k: float(v) for k, v in d.get("phases", {}).items()},
        measure=dict(d.get("measure", {})),
        options=dict(d.get("options", {})),
    )
