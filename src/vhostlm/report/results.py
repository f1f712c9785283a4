"""The results model of a run and its results.json form.

Pydantic dataclasses for runs, cases and steps: mutable like plain dataclasses, validated when
built and when a results.json is read (one line naming the bad field), and the source of the
published JSON Schema (`results_schema()`, `results.schema.json` in the package).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import ErrorDetails, PydanticCustomError

from vhostlm.errors import UsageError

Verdict = Literal["pass", "fail", "error", "skip"]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)
ACCELS = ("kvm", "tcg", "")  # "" = not probed yet (the run stopped before the KVM probe)
SCHEMA_NAME = "results.schema.json"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Every key is always written (serialisation schema: all required); a file may leave out
# the keys older versions did not write, and a class's _FILE_KEYS say which it may not.
_CONFIG = ConfigDict(json_schema_serialization_defaults_required=True)


def _iso_with_offset(text: str) -> str:
    """`RunResult.started` must be ISO 8601 with a UTC offset, as `now_iso` writes it."""
    try:
        aware = datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        aware = False
    if not aware:
        raise PydanticCustomError("iso_datetime", "Input should be ISO 8601 with a UTC offset")
    return text


def _known_accel(text: str) -> str:
    """`RunResult.accel` is kvm, tcg or "" (kept a str: the runner assigns a probe's str)."""
    if text not in ACCELS:
        raise PydanticCustomError("accel", "Input should be 'kvm', 'tcg' or '' for not probed")
    return text


def _one_figure_error(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """One error for a bad figure instead of one per member of the union."""
    try:
        return handler(value)
    except ValidationError:
        raise PydanticCustomError("figure", "Input should be a number or a string") from None


Started = Annotated[
    str,
    AfterValidator(_iso_with_offset),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
Accel = Annotated[
    str, AfterValidator(_known_accel), WithJsonSchema({"type": "string", "enum": list(ACCELS)})
]
Figure = Annotated[float | int | str, WrapValidator(_one_figure_error)]


def now_iso() -> str:
    """Current local time as ISO 8601 with its UTC offset, for `RunResult.started`."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


@dataclass(config=_CONFIG)
class _Record:
    """Base of the records: the keys a results.json object must have (`_FILE_KEYS`)."""

    _FILE_KEYS: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _file_keys_present(cls, data: Any) -> Any:
        """Only objects read from a file are dicts here (constructors pass their arguments)."""
        if isinstance(data, dict):
            missing = next((key for key in cls._FILE_KEYS if key not in data), None)
            if missing is not None:
                raise PydanticCustomError("missing_key", "Field required", {"key": missing})
        return data


@dataclass(config=_CONFIG)
class StepResult(_Record):
    """One named step of a case (e.g. a step of the seed plan) with its own verdict."""

    _FILE_KEYS: ClassVar[tuple[str, ...]] = ("name", "verdict", "detail")

    name: str
    verdict: Verdict
    detail: str = ""
    duration_s: float = 0.0
    figures: dict[str, Figure] = Field(
        default_factory=dict, description="the step's own numbers, e.g. boot_s"
    )


@dataclass(config=_CONFIG)
class MigrationFigures(_Record):
    """QEMU's own numbers for one migration, from QMP `query-migrate`."""

    _FILE_KEYS: ClassVar[tuple[str, ...]] = (
        "status",
        "total_time_ms",
        "downtime_ms",
        "setup_time_ms",
        "ram_transferred_bytes",
    )

    status: str = Field(default="", description='QEMU\'s status, e.g. "completed"; "" = none')
    total_time_ms: int = 0
    downtime_ms: int = 0
    setup_time_ms: int = 0
    ram_transferred_bytes: int = 0
    expected_downtime_ms: int = 0
    mbps: float = 0.0
    dirty_sync_count: int = 0
    postcopy_requests: int = Field(
        default=0,
        description="pages the postcopy destination faulted on and asked the source for "
        "(QEMU's ram.postcopy-requests); 0 outside postcopy",
    )

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
            postcopy_requests=_as_int(ram.get("postcopy-requests")),
        )


@dataclass(config=_CONFIG)
class TrafficFigures(_Record):
    """Tester packets sent and guest packets received before, during and after migration."""

    _FILE_KEYS: ClassVar[tuple[str, ...]] = (
        "sent",
        "received_before",
        "received_during",
        "received_after",
    )

    sent: int = 0
    received_before: int = 0
    received_during: int = 0
    received_after: int = 0


@dataclass(config=_CONFIG)
class IntegrityFigures(_Record):
    """Whether the migrated guest is whole: probe payloads, guest memory, what programs said.

    Each check that ran is named in `checks`; its figures are 0 when it did not run."""

    checks: list[str] = Field(
        default_factory=list, description="the checks that ran: payload, memory, anomalies"
    )
    payload_checked: int = Field(default=0, description="probe replies whose payload was checked")
    payload_corrupt: int = Field(default=0, description="replies with a wrong payload byte")
    payload_foreign: int = Field(
        default=0, description="replies carrying another probe's payload (a stale buffer)"
    )
    payload_truncated: int = 0
    payload_samples: list[dict[str, Any]] = Field(
        default_factory=list, description="the first bad replies: seq, offset, expected, seen"
    )
    memcheck_mb: int = Field(default=0, description="guest RAM the memory checker owned")
    memcheck_dirty_mb_s: float = Field(default=0.0, description="the rate it rewrote it at")
    memcheck_scans: int = Field(
        default=0, description="complete scans of every page after the last switch-over"
    )
    pages_checked: int = Field(default=0, description="pages verified after the switch-over")
    pages_bad: int = Field(default=0, description="pages found stale or corrupt, any time")
    bad_pages: list[dict[str, Any]] = Field(
        default_factory=list, description="the first bad pages: page, gpa, kind, generations"
    )
    anomalies: list[dict[str, Any]] = Field(
        default_factory=list, description="lines of the programs that show lost state"
    )
    ram_pages_differ: int = Field(
        default=0, description="--verify-ram: pages of destination RAM unlike the source's"
    )
    ram: list[dict[str, Any]] = Field(
        default_factory=list, description="--verify-ram: each switch-over's comparison"
    )
    failure: str = Field(default="", description="the first integrity failure, in words")


@dataclass(config=_CONFIG)
class CaseResult(_Record):
    """One test case of the plan: its steps, verdict and figures."""

    _FILE_KEYS: ClassVar[tuple[str, ...]] = (
        "name",
        "verdict",
        "reason",
        "duration_s",
        "steps",
        "migration",
        "traffic",
    )

    name: str
    verdict: Verdict = "pass"
    reason: str = Field(default="", description="why the case did not pass; may be multi-line")
    duration_s: float = 0.0
    steps: list[StepResult] = Field(default_factory=list)
    migration: MigrationFigures = Field(
        default_factory=MigrationFigures, description="the case's first migration"
    )
    traffic: TrafficFigures = Field(default_factory=TrafficFigures)
    phases: dict[str, float] = Field(default_factory=dict, description="seconds per phase")
    measure: dict[str, Any] = Field(
        default_factory=dict, description="probe-stream figures (outage, loss, timeline)"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="the options it ran with")
    integrity: IntegrityFigures = Field(default_factory=IntegrityFigures)

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


@dataclass(config=_CONFIG)
class RunResult(_Record):
    """A whole run: environment, versions and every case; serialised as results.json."""

    _FILE_KEYS: ClassVar[tuple[str, ...]] = ("started", "duration_s", "accel", "testbed", "cases")

    started: Started = Field(description="ISO 8601 with a UTC offset")
    duration_s: float = 0.0
    accel: Accel = Field(default="", description='"" when the run stopped before the probe')
    testbed: str = Field(default="lab", description='"lab" or "ssh:<testbed file>"')
    cases: list[CaseResult] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)
    host: dict[str, str] = Field(default_factory=dict)
    command: list[str] = Field(default_factory=list, description="argv of the run")
    output_dir: str = ""
    run_id: str = ""
    phases: dict[str, float] = Field(default_factory=dict, description="seconds per phase")
    clocks: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="role -> its clock against the controller's: offset_ms (node - "
        "controller, first reading), uncertainty_ms, offset_after_ms, drift_ppm, rtt_ms; "
        "same_clock for a node on this machine. Remote event times are corrected with it",
    )

    @property
    def exit_code(self) -> int:
        """0 when every case passed or was skipped, else 1 (a failed step counts as failed)."""
        return 0 if all(case.ok for case in self.cases) else 1

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (plain dicts and lists), as results.json holds it."""
        data: dict[str, Any] = _RUN.dump_python(self, warnings=False)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> RunResult:
        """Inverse of `to_dict`; raises ValueError naming the first problem (field: what)."""
        try:
            return _RUN.validate_json(json.dumps(data), strict=True)
        except ValidationError as e:
            raise ValueError(_describe(e.errors(include_url=False)[0])) from None


_RUN = TypeAdapter(RunResult)


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


def load_results(path: Path | str) -> RunResult:
    """Read and validate a results.json; raises UsageError (one line: file, field, what)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{path}: cannot read results file: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: results file is not UTF-8 text") from e
    try:
        return _RUN.validate_json(text, strict=True)
    except ValidationError as e:
        raise UsageError(f"{path}: {_describe(e.errors(include_url=False)[0])}") from None


def validate_results(data: Any) -> list[str]:
    """Problems of a parsed results.json ("field.path: what is wrong"); [] if it fits."""
    try:
        _RUN.validate_json(json.dumps(data), strict=True)
    except ValidationError as e:
        return [_describe(err) for err in e.errors(include_url=False)]
    return []


def results_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of results.json as vhostlm writes it, from the model."""
    schema = _RUN.json_schema(mode="serialization")
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def schema_text() -> str:
    """`results_schema()` as the text of results.schema.json (indent 2, final newline)."""
    return json.dumps(results_schema(), indent=2, ensure_ascii=False) + "\n"


def packaged_schema() -> str:
    """The results.schema.json shipped in the package (a unit test keeps it up to date)."""
    return resources.files("vhostlm.report").joinpath(SCHEMA_NAME).read_text(encoding="utf-8")


def _describe(err: ErrorDetails) -> str:
    """One validation error as "cases.0.steps.1.verdict: Input should be ... (got 'ok')"."""
    loc = list(err["loc"])
    kind, value = err["type"], err.get("input")
    if kind == "json_invalid":
        return f"not valid JSON: {err.get('ctx', {}).get('error', err['msg'])}"
    if kind == "dataclass_type" and not loc:
        return f"expected a JSON object, got {_json_type(value)}"
    if kind == "missing_key":
        loc.append(err.get("ctx", {})["key"])
    if kind in ("missing", "missing_key"):
        message = "missing"
    elif isinstance(value, dict | list):
        message = f"{err['msg']} (got {_json_type(value)})"
    else:
        message = f"{err['msg']} (got {json.dumps(value, ensure_ascii=False):.60})"
    return f"{'.'.join(str(part) for part in loc) or '(top level)'}: {message}"


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "null" if value is None else type(value).__name__


def _as_int(v: Any) -> int:
    """A QMP figure as int: floats truncated, anything else (missing, bool, text) is 0."""
    if isinstance(v, bool):
        return 0
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v):
        return int(v)
    return 0


def _as_float(v: Any) -> float:
    """A QMP figure as float; anything not a number (or a bool) is 0.0."""
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0


if __name__ == "__main__":  # python -m vhostlm.report.results > results.schema.json
    sys.stdout.write(schema_text())
