"""bench/scale_bench.py's parsing and maths: points, figures from results, table and chart."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import scale_bench as sb  # noqa: E402


def fake_case(total: int = 1500, down: int = 20, outage: float = 75.5, ram: int = 3 << 20,
              status: str = "completed") -> dict[str, Any]:  # fmt: skip
    """A results.json case entry with only what the bench reads."""
    return {
        "name": "virtio_net", "verdict": "pass", "duration_s": 11.25,
        "migration": {"status": status, "total_time_ms": total, "downtime_ms": down,
                      "ram_transferred_bytes": ram, "mbps": 900.0, "dirty_sync_count": 3},
        "measure": {"outage_ms": outage},
    }  # fmt: skip


def figs(total: float, ram: float = 1.0) -> sb.Figures:
    return sb.Figures(total_ms=total, downtime_ms=10, outage_ms=50, ram_mib=ram, mbps=800,
                      sync_rounds=2, case_s=9)  # fmt: skip


def test_points_vary_one_axis_at_a_time_from_the_base() -> None:
    points = sb.axis_points()
    assert len(points) == 7  # the base and 3 + 2 + 1, not 4 x 3 x 2
    base = points[0]
    assert (base.axis, base.mem_mb, base.dirty_mb_s, base.queues) == ("base", 1024, 0, 1)
    shapes = {(p.mem_mb, p.dirty_mb_s, p.queues) for p in points[1:]}
    assert shapes == {
        (512, 0, 1), (2048, 0, 1), (4096, 0, 1), (1024, 16, 1), (1024, 64, 1), (1024, 0, 4),
    }  # fmt: skip
    assert points[-1].mem_mb == 4096  # the costliest last


def test_each_point_runs_the_case_that_has_its_shape() -> None:
    assert sb.Point("base").case == "virtio_net"
    assert sb.Point("queues", queues=4).case == "split_virtio_net_mq4"
    assert sb.Point("dirty", dirty_mb_s=16).case == "virtio_net_dirty16"
    args = sb.run_args(sb.Point("memory", mem_mb=2048), 0)
    assert args == ["--case", "virtio_net", "--guest-mem", "2048", "--memcheck-mb", "0"]
    assert "_vhostlm" in sb.command(sb.Point("dirty", dirty_mb_s=64))
    assert "_vhostlm" not in sb.command(sb.Point("base"))


def test_figures_come_from_the_case_entry() -> None:
    f = sb.case_figures(fake_case())
    assert f is not None
    assert (f.total_ms, f.downtime_ms, f.outage_ms) == (1500, 20, 75.5)
    assert f.ram_mib == 3.0
    assert (f.mbps, f.sync_rounds, f.case_s) == (900.0, 3, 11.25)


def test_a_migration_that_did_not_complete_gives_no_figures() -> None:
    assert sb.case_figures(fake_case(status="failed")) is None
    assert sb.case_figures({"verdict": "error"}) is None


def test_the_row_figures_are_the_median_of_its_runs() -> None:
    row = sb.Row(sb.Point("base"), ["pass"] * 3, [figs(1000), figs(9000), figs(3000)])
    assert row.figures is not None and row.figures.total_ms == 3000
    assert sb.Row(sb.Point("base")).figures is None


def test_markdown_table_rows() -> None:
    ok = sb.Row(sb.Point("memory", mem_mb=1024), ["pass"], [figs(1234, ram=2.25)])
    gone = sb.Row(sb.Point("memory", mem_mb=4096), [], [], ["run 1 not run: needs ~9000 MiB"])
    lines = sb.markdown_table([ok, gone]).splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("| axis | guest MiB |")
    assert lines[2] == ("| memory | 1024 | 0 | 1 | virtio_net | 1/1 | pass | 1234 | 10 | 50.0 "
                        "| 2.2 | 800 | 2 | 9.0 |  |")  # fmt: skip
    assert lines[3].endswith("| - | - | run 1 not run: needs ~9000 MiB |")
    assert "| 0/0 | - |" in lines[3]


def test_nice_max_rounds_up_to_1_2_5() -> None:
    assert sb.nice_max(0) == 1
    assert sb.nice_max(0.7) == 1
    assert sb.nice_max(13) == 20
    assert sb.nice_max(450) == 500
    assert sb.nice_max(500) == 500
    assert sb.nice_max(5001) == 10000


def test_pixel_maths() -> None:
    assert sb.y_px(50, 100, top=10, bottom=110) == 60
    assert sb.y_px(0, 100, top=10, bottom=110) == 110
    assert sb.y_px(100, 100, top=10, bottom=110) == 10
    assert sb.x_px(0, 3, 0, 200) == 0
    assert sb.x_px(1, 3, 0, 200) == 100
    assert sb.x_px(0, 1, 0, 200) == 100


def test_the_chart_is_one_page_with_a_panel_per_metric_and_axis() -> None:
    rows = [
        sb.Row(sb.Point("memory", mem_mb=512), ["pass"], [figs(100)]),
        sb.Row(sb.Point("base"), ["pass"], [figs(200)]),
        sb.Row(sb.Point("memory", mem_mb=2048), ["pass"], [figs(400)]),
        sb.Row(sb.Point("memory", mem_mb=4096), [], [], ["not run"]),
        sb.Row(sb.Point("queues", queues=4), ["pass"], [figs(150)]),
    ]
    page = sb.chart_html(rows, "t", ["note <1>"])
    assert page.count("<svg") == 12  # 4 metrics x 3 axes
    assert not re.search(r"https?://|\bsrc=|<link|<script", page)  # nothing external
    assert "note &lt;1&gt;" in page
    total_vs_memory = sb.panel_svg("memory", "total_ms", "QEMU total time", "ms", rows)
    cys = [
        float(y)
        for y in re.findall(r'<circle class="pt" cx="[\d.]+" cy="([\d.]+)"', total_vs_memory)
    ]
    assert len(cys) == 3  # 512, 1024 (the base), 2048; 4096 has none
    assert cys[0] > cys[1] > cys[2]  # bigger totals higher up
    assert "n/a" in total_vs_memory
    # the axis top is 500 (400 x 1.1 rounded up): 400 sits 4/5 of the way up the plot
    bottom, top = sb.PANEL_H - sb.PAD_B, sb.PAD_T
    assert abs(cys[2] - (bottom - 0.8 * (bottom - top))) < 0.1


def test_available_memory_counts_free_hugepages() -> None:
    meminfo = (
        "MemTotal: 24000000 kB\nMemAvailable: 2097152 kB\n"
        "HugePages_Free: 512\nHugepagesize: 2048 kB\n"
    )
    assert sb.available_mb(meminfo) == 2048 + 1024


def test_a_point_needs_two_guests_of_memory() -> None:
    assert sb.needed_mb(4096) > 2 * 4096
    assert sb.needed_mb(1024) - sb.needed_mb(512) == 1024


def test_the_dirty_copy_is_virtio_net_with_a_load(monkeypatch: Any) -> None:
    from vhostlm.plans import catalog
    from vhostlm.plans.seed import VIRTIO_NET

    monkeypatch.setitem(catalog.PLANS, "all", list(catalog.PLANS["all"]))
    sb.register_dirty_case(16)
    (spec,) = catalog.select_cases("seed", ["virtio_net_dirty16"], None)
    assert spec.dirty_mb_s == 16
    assert spec.driver is VIRTIO_NET.driver and spec.queues == 1 and spec.kind == VIRTIO_NET.kind


def test_a_guest_panic_is_found_in_the_console_logs(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "console-virtio_net-backup.log").write_text("[ 0.1] booting\n")
    (logs / "console-virtio_net-host.log").write_text(
        "[ 1.0] x\n[ 1.3] Kernel panic - not syncing: System is deadlocked on memory\n"
    )
    assert sb.panic_line(tmp_path) == "Kernel panic - not syncing: System is deadlocked on memory"
    (logs / "console-virtio_net-host.log").write_text("[ 1.0] fine\n")
    assert sb.panic_line(tmp_path) is None
