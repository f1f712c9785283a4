"""The seed plan end to end on the embedded lab, with the real stack."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from tests.e2e.conftest import hugepages_baseline, leftovers, load, vhostlm
from vhostlm.report.results import validate_results

SEED_STEPS = [
    "host_testpmd",
    "host_vm",
    "backup_testpmd",
    "backup_vm",
    "guest_boots",
    "guest_memcheck",
    "vhost_connected",
    "guest_receives",
    "migration_active",
    "receives_during_migration",
    "migration_completed",
    "receives_after_migration",
]


def test_seed_plan_passes_and_leaves_nothing(tmp_path: Path, hugepages_before: int) -> None:
    """Both seed cases pass with probes; figures, reports, logs and commands are recorded."""
    out = tmp_path / "run"
    junit = tmp_path / "junit.xml"
    proc = vhostlm("run", "--output", str(out), "--junit", str(junit))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "result: PASS" in proc.stdout
    data = load(out / "results.json")
    assert validate_results(data) == []
    assert data["accel"] in ("kvm", "tcg")
    assert {c["name"] for c in data["cases"]} == {"virtio_pmd", "virtio_net"}
    for case in data["cases"]:
        steps = {s["name"]: s["verdict"] for s in case["steps"]}
        for name in SEED_STEPS:
            assert steps.get(name) == "pass", (case["name"], name, case["steps"])
        assert case["verdict"] == "pass"
        mig = case["migration"]
        assert mig["status"] == "completed"
        assert mig["total_time_ms"] > 0 and mig["ram_transferred_bytes"] > 0
        traffic = case["traffic"]
        assert traffic["received_before"] > 0
        assert traffic["received_during"] > 0
        assert traffic["received_after"] >= 10
        check_measure(case, out)
        # the guest is whole: every reply's payload and every page of the checker's region
        integrity = case["integrity"]
        assert integrity["checks"] == ["payload", "memory", "anomalies"], integrity
        assert integrity["payload_checked"] >= case["measure"]["replies"] > 0
        assert integrity["pages_checked"] == 1024 // 4 * 256 and integrity["pages_bad"] == 0
        assert integrity["failure"] == "" and steps["guest_intact"] == "pass"
    for key in ("qemu", "dpdk", "guest_kernel"):
        assert data["versions"][key]
    commands = (out / "commands.sh").read_text()
    assert "qemu-system-x86_64" in commands and "-incoming tcp:" in commands
    assert "dpdk-testpmd" in commands and "net_vhost0" in commands
    logs = {p.name for p in (out / "logs").iterdir()}
    for case in ("virtio_pmd", "virtio_net"):
        for name in (
            f"qemu-{case}-host.log",
            f"qemu-{case}-backup.log",
            f"console-{case}-host.log",
            f"console-{case}-backup.log",
            f"{case}-testpmd-host.log",
            f"{case}-testpmd-backup.log",
            f"{case}-tester.log",
        ):
            assert name in logs, name
    assert "set fwd icmpecho" in (out / "logs/console-virtio_pmd-host.log").read_text()
    check_junit(junit, data)
    check_html(out / "report.html", data)
    assert leftovers(data["run_id"]) == []
    assert hugepages_baseline() == hugepages_before


def check_measure(case: dict[str, Any], out: Path) -> None:
    """Probe figures against the tester's own data file and log, recomputed here: counts,
    clean outside the switch-over, outage >= QEMU's downtime, kernel-stamped replies."""
    m = case["measure"]
    assert m["pps"] == 1000 and m["resolution_ms"] == 1.0
    raw = json.loads((out / f"{case['name']}-tester.json").read_text())
    log = (out / "logs" / f"{case['name']}-tester.log").read_text()
    # the tester's own last words: what it sent and received, independent of the analysis
    sent, got = (int(x) for x in re.findall(r"total sent (\d+) replies (\d+)", log)[-1])
    assert m["sent"] == sent == len(raw["send_ts"]) > 1000
    answered = {s for s, _ in raw["replies"] if 0 <= s < sent}
    assert len(raw["replies"]) == got
    assert m["replies"] == len(answered) > 0 and m["lost"] == sent - len(answered)
    assert m["duplicates"] == got - len(answered)
    assert m["lost_outside_window"] == 0, m
    # replies are kernel-stamped, the tester dropped nothing, its sends are in order
    rx = raw["rx"]
    assert rx["clock"] == "kernel" == m["timestamps"] and rx["unstamped"] == 0
    assert rx["drops"] == m["tester_drops"] == 0
    assert all(a <= b for a, b in zip(raw["send_ts"], raw["send_ts"][1:], strict=False))
    # the outage recomputed from the raw replies: the largest gap touching the window
    lo, hi = m["window"]
    times = sorted(t for s, t in raw["replies"] if 0 <= s < sent)
    edges = [raw["send_ts"][0], *times, raw["send_ts"][-1]]
    gaps = [(b - a) * 1000 for a, b in zip(edges, edges[1:], strict=False) if b >= lo and a <= hi]
    assert m["outage_ms"] == pytest.approx(max(gaps), abs=0.01)
    events = m["events"]
    assert events["migrate"] < lo < events["stop"] < events["resume"] < hi  # the switch-over
    assert m["outage_start"] >= events["migrate"]
    assert 0 < m["outage_uncertainty_ms"] < m["outage_ms"], m
    assert m["noise_ms"]["p99"] <= m["noise_ms"]["max"]
    downtime = case["migration"]["downtime_ms"]
    assert m["outage_ms"] >= downtime - m["resolution_ms"], (m["outage_ms"], downtime)
    assert m["stop_to_resume_ms"] > 0
    assert m["qemu"]["downtime_ms"] == downtime
    assert events["migrate"] <= events["active"] <= events["stop"] <= events["resume"]
    timeline = m["timeline"]
    t0 = raw["t0"]
    every = sorted(t for _, t in raw["replies"])
    assert timeline["reply_ms"] == [round((t - t0) * 1000, 3) for t in every]
    assert set(timeline["marks_ms"]) >= {"migrate", "active", "stop", "resume", "completed"}
    check_breakdown(case, out)


# Every segment and the outage are rounded to a microsecond (3 decimals of ms) on their
# own, so n segments may sum to the outage only within (n + 1) * 0.0005 ms.
ROUNDING_MS = 0.0005


def check_breakdown(case: dict[str, Any], out: Path) -> None:
    """The outage explained: the moments were all seen, the segments inside the outage add
    up to it within its uncertainty (and the rounding), each segment is the time between
    two consecutive moments, and the ready moment is a real line of the backup testpmd's
    log, read after STOP and no later than the first reply (within the uncertainty: the
    guest cannot answer from the backup before its backend is ready; the line's time is
    when the controller read it)."""
    m = case["measure"]
    bd = m["breakdown"]
    assert bd == m["legs"][0]["breakdown"] and bd["to"] == "backup", bd
    assert set(bd["missing"]) <= {"announce"}, bd  # the announce is not the seed's check
    at = {x["name"]: x["at"] for x in bd["moments"]}
    assert at["last_reply"] == m["outage_start"] and at["first_reply"] == m["outage_end"]
    assert at["stop"] == m["events"]["stop"] and at["resume"] == m["events"]["resume"]
    times = [x["at"] for x in bd["moments"]]
    assert times == sorted(times), bd["moments"]
    for seg, (a, b) in zip(bd["segments"], zip(times, times[1:], strict=False), strict=True):
        assert seg["ms"] == pytest.approx((b - a) * 1000, abs=ROUNDING_MS), seg
    inside = [s for s in bd["segments"] if s["in_outage"]]
    spread = m["outage_uncertainty_ms"]
    assert bd["uncertainty_ms"] == spread and bd["outage_ms"] == m["outage_ms"]
    total = sum(s["ms"] for s in inside)
    assert abs(total - m["outage_ms"]) <= spread + ROUNDING_MS * (len(inside) + 1), bd
    assert bd["within_uncertainty"] is True
    assert bd["biggest"] in inside and bd["biggest"]["ms"] == max(s["ms"] for s in inside)
    log = (out / "logs" / f"{case['name']}-testpmd-backup.log").read_text().splitlines()
    assert "virtio is now ready for processing" in bd["ready_line"]
    assert bd["ready_line"] in (line.strip() for line in log), bd["ready_line"]
    assert m["events"]["ready"] == at["ready"]
    assert at["stop"] < at["ready"] <= at["first_reply"] + spread / 1000, bd["moments"]


def check_junit(path: Path, data: dict[str, Any]) -> None:
    """The JUnit file parses and has one passing testcase per case."""
    root = ElementTree.parse(path).getroot()
    cases = root.findall(".//testcase")
    assert sorted(c.get("name", "") for c in cases) == sorted(c["name"] for c in data["cases"])
    for case in cases:
        assert case.find("failure") is None and case.find("error") is None
        out = case.findtext("system-out") or ""
        assert "migration_completed" in out and "outage" in out


class _Canvases(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.canvases = 0
        self.bars = 0
        self.data = ""
        self._in_data = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.canvases += tag == "canvas"
        self.bars += "bd-bar" in (dict(attrs).get("class") or "").split()
        self._in_data = tag == "script" and ("id", "vhostlm-data") in attrs

    def handle_data(self, data: str) -> None:
        if self._in_data:
            self.data += data

    def handle_endtag(self, tag: str) -> None:
        self._in_data = False


def check_html(path: Path, data: dict[str, Any]) -> None:
    """report.html is beside results.json with a timeline canvas per case and its data."""
    parser = _Canvases()
    parser.feed(path.read_text())
    assert parser.canvases == len(data["cases"])
    assert parser.bars == len(data["cases"])  # one outage breakdown per migration
    embedded = json.loads(parser.data)
    assert len(embedded["cases"]) == len(data["cases"])


def test_no_vhost_backend_on_backup_fails(tmp_path: Path, hugepages_before: int) -> None:
    """Without a vhost backend on the backup the case must fail, and say why."""
    out = tmp_path / "run"
    proc = vhostlm("run", "--case", "virtio_net", "--no-backup-backend", "--output", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = load(out / "results.json")
    case = data["cases"][0]
    assert case["verdict"] == "fail"
    assert "no vhost-user backend on the backup" in case["reason"]
    verdicts = {s["name"]: s["verdict"] for s in case["steps"]}
    assert verdicts["backup_vm"] == "fail"
    assert verdicts["receives_after_migration"] == "skip"
    assert leftovers(data["run_id"]) == []
    assert hugepages_baseline() == hugepages_before


def test_seed_traffic_form_and_report_command(tmp_path: Path) -> None:
    """--seed-traffic keeps the seed's exact rxonly/verbose form; `report` renders it again."""
    out = tmp_path / "run"
    proc = vhostlm("run", "--case", "virtio_pmd", "--seed-traffic", "--output", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = load(out / "results.json")
    case = data["cases"][0]
    assert case["measure"].get("sent") is None  # no probes
    console = (out / "logs/console-virtio_pmd-host.log").read_text()
    assert "set fwd rxonly" in console and "start tx_first" in console
    assert "port 0/queue 0: received" in (out / "logs/console-virtio_pmd-backup.log").read_text()
    (out / "report.html").unlink()
    again = vhostlm("report", str(out / "results.json"))
    assert again.returncode == 0, again.stderr
    assert (out / "report.html").exists()
    assert leftovers(data["run_id"]) == []


def test_max_outage_fails_with_the_measured_outage(tmp_path: Path) -> None:
    """With --max-outage-ms 0.001 the case fails and its reason names the outage."""
    out = tmp_path / "run"
    proc = vhostlm("run", "--case", "virtio_net", "--max-outage-ms", "0.001", "--output", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    case = load(out / "results.json")["cases"][0]
    assert case["verdict"] == "fail"
    measured = case["measure"]["outage_ms"]
    assert case["reason"] == (
        f"within_limits: outage {measured:.3f} ms exceeds --max-outage-ms 0.001"
    )
