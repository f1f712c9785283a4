"""Payload integrity of the probe stream: the tester's findings as results figures.

probe.py (on the tester) checks every reply's payload against its own sequence number
and dumps counts and the first samples under "payload"; these pure functions turn that
into `measure` figures and a one-line verdict, and check --probe-size before a run.
A reply carrying another probe's payload is the signature of a guest page the vhost
backend wrote that the migration did not send again (a stale receive buffer).
"""

from __future__ import annotations

from typing import Any

from vhostlm.errors import UsageError
from vhostlm.measure.probe import check_size


def check_probe_size(size: int) -> None:
    """UsageError naming the bounds when probes of `size` frame bytes cannot be built."""
    reason = check_size(size)
    if reason is not None:
        raise UsageError(reason)


def payload_figures(data: dict[str, Any]) -> dict[str, Any]:
    """The payload figures of a probe dump (the whole dump or its "payload" part).

    {} when the dump has none (the seed stream, or a probe.py without the checks)."""
    part = data.get("payload") if "payload" in data else data
    if not isinstance(part, dict) or "checked" not in part:
        return {}
    return {
        "probe_size": int(part.get("size", 0)),
        "payload_checked": int(part["checked"]),
        "payload_corrupt": int(part.get("corrupt", 0)),
        "payload_foreign": int(part.get("foreign", 0)),
        "payload_truncated": int(part.get("truncated", 0)),
        "samples": [dict(s) for s in part.get("samples", [])],
    }


def describe_sample(sample: dict[str, Any], size: int | None = None) -> str:
    """One finding in words: which probe, what was wrong, where (`size`: the probes')."""
    seq, kind, offset = sample.get("seq"), sample.get("kind"), sample.get("offset")
    if kind == "foreign":
        return (
            f"probe {seq}'s reply carries probe {sample.get('other_seq')}'s payload from "
            f"byte {offset} (a stale receive buffer)"
        )
    if kind == "truncated":
        of = f" of {size}" if size else ""
        return f"probe {seq}'s reply is truncated at byte {sample.get('length')}{of}"
    expected, seen = str(sample.get("expected", "")), str(sample.get("seen", ""))
    return (
        f"probe {seq}'s reply is corrupt at byte {offset}: expected 0x{expected[:2] or '--'} "
        f"seen 0x{seen[:2] or '--'}"
    )


def payload_failure(figures: dict[str, Any]) -> str | None:
    """Why the payload check fails, in one line naming the first sample; None when every
    checked reply carried its own payload in full (or nothing was checked)."""
    corrupt = int(figures.get("payload_corrupt", 0))
    foreign = int(figures.get("payload_foreign", 0))
    truncated = int(figures.get("payload_truncated", 0))
    bad = corrupt + foreign + truncated
    if bad == 0:
        return None
    samples = figures.get("samples") or []
    size = int(figures.get("probe_size", 0)) or None
    first = describe_sample(samples[0], size) if samples else "replies with a wrong payload"
    checked = int(figures.get("payload_checked", 0))
    return (
        f"{first}; {bad} of {checked} replies checked are wrong: {foreign} another probe's "
        f"payload, {corrupt} corrupt, {truncated} truncated"
    )
