"""The run options declared once: RunOptions unchanged, the grammar and mapping derived."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from vhostlm.cli import build_parser
from vhostlm.errors import UsageError
from vhostlm.options import RunOptions, RunTarget, flag_for, from_namespace, run_flags, validate

# RunOptions as the plans read it (names, defaults) before its flags moved beside it.
FIELDS = {
    "probes": True, "pps": None, "dst_mac": "52:54:00:00:00:01", "guest_mem_mb": 1024,
    "guest_smp": None, "boot_timeout_s": 90.0, "migration_timeout_s": 120.0,
    "after_packets": 10, "warmup_s": 1.0, "after_timeout_s": 30.0, "backup_backend": True,
    "switch_learning": False, "cpu": "", "max_outage_ms": None, "max_loss": None,
    "round_trips": None, "downtime_limit_ms": None, "max_bandwidth_mbps": None,
    "converge_timeout_s": 20.0, "guest_memory": "hugetlbfs", "migration_tls": False,
    "backend": "testpmd", "vhost_mode": "server", "probe_size": 256, "memcheck_mb": None,
    "verify_ram": False, "qemu": None, "guest_image": None, "guest_user": "root",
    "guest_password_file": None,
}  # fmt: skip
HELP_ORDER = [
    "--plan", "--case", "--output", "--pps", "--seed-traffic", "--max-outage-ms", "--max-loss",
    "--junit", "-k", "--round-trips", "--downtime-limit", "--max-bandwidth",
    "--converge-timeout", "--guest-memory", "--guest-smp", "--dst-mac", "--guest-mem",
    "--migration-timeout", "--migration-tls", "--no-backup-backend", "--switch-learning",
    "--cpu", "--backend", "--vhost-mode", "--probe-size", "--memcheck-mb", "--verify-ram", "--qemu",
    "--guest-image", "--guest-user", "--guest-password-file", "--boot-timeout", "--testbed",
]  # fmt: skip


def parse(*argv: str) -> tuple[RunTarget, RunOptions]:
    args = build_parser().parse_args(["run", *argv])
    return from_namespace(RunTarget, args), from_namespace(RunOptions, args)


def test_run_options_keep_their_fields_defaults_and_rate() -> None:
    opts = RunOptions()
    assert {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)} == FIELDS
    assert opts.rate == 1000.0 and RunOptions(probes=False).rate == 50.0
    assert RunOptions(pps=7.0).rate == 7.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.pps = 3.0  # type: ignore[misc]


def test_help_lists_the_options_in_their_old_order(capsys: pytest.CaptureFixture[str]) -> None:
    assert [how.flag for _, how in run_flags()] == HELP_ORDER
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    text = capsys.readouterr().out
    where = [re.search(rf"\n  {re.escape(flag)}[ \n]", text).start() for flag in HELP_ORDER]  # type: ignore[union-attr]
    assert where == sorted(where)
    assert "tester rate (default 1000 probes/s; 50/s with" in " ".join(text.split())


def test_no_arguments_give_the_defaults() -> None:
    target, options = parse()
    assert options == RunOptions()
    assert target == RunTarget(plan="seed", cases=(), output=None, junit=None, keyword=None)


def test_every_flag_sets_its_own_field() -> None:
    target, options = parse(
        "--plan", "dts", "--case", "a", "--case", "b", "--output", "o", "--junit", "j.xml",
        "-k", "virtio", "--testbed", "t.yaml", "--pps", "5", "--seed-traffic",
        "--round-trips", "2", "--downtime-limit", "7", "--max-bandwidth", "9",
        "--converge-timeout", "4", "--guest-memory", "memfd", "--guest-smp", "3",
        "--dst-mac", "AA:bb:cc:dd:ee:ff", "--guest-mem", "512", "--migration-timeout", "6",
        "--migration-tls", "--no-backup-backend", "--switch-learning", "--cpu", "max",
    )  # fmt: skip
    assert target == RunTarget("dts", ("a", "b"), Path("o"), Path("j.xml"), "virtio",
                               Path("t.yaml"))  # fmt: skip
    assert options == RunOptions(
        pps=5.0, probes=False, round_trips=2, downtime_limit_ms=7, max_bandwidth_mbps=9.0,
        converge_timeout_s=4.0, guest_memory="memfd", guest_smp=3, dst_mac="aa:bb:cc:dd:ee:ff",
        guest_mem_mb=512, migration_timeout_s=6.0, migration_tls=True, backup_backend=False,
        switch_learning=True, cpu="max",
    )  # fmt: skip
    _, limits = parse("--max-outage-ms", "2.5", "--max-loss", "0")
    assert (limits.max_outage_ms, limits.max_loss) == (2.5, 0)


def test_probe_limits_need_probes_in_one_line() -> None:
    assert flag_for("probes") == "--seed-traffic"
    target, options = parse("--seed-traffic", "--max-outage-ms", "3")
    with pytest.raises(UsageError) as err:
        validate(target, options)
    assert str(err.value) == "--max-outage-ms and --max-loss need probes: drop --seed-traffic"
    validate(*parse("--max-loss", "3"))  # with probes, fine


def test_path_checks_name_their_flag(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UsageError, match=r"^--output: .*afile is not a directory"):
        validate(*parse("--output", str(tmp_path / "afile" / "run")))
    with pytest.raises(UsageError, match=r"^--junit: .* is a directory"):
        validate(*parse("--junit", str(tmp_path)))


def test_backend_choices_come_from_the_registry() -> None:
    from vhostlm.backends.registry import BACKENDS

    _, options = parse("--backend", "ovs-dpdk", "--vhost-mode", "client")
    assert (options.backend, options.vhost_mode) == ("ovs-dpdk", "client")
    assert list(BACKENDS) == ["testpmd", "ovs-dpdk"]
    with pytest.raises(
        UsageError, match=r"invalid choice: 'vpp' \(choose from 'testpmd', 'ovs-dpdk'\)"
    ):
        parse("--backend", "vpp")
