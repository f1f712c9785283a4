"""Tests of the in-guest memory checker: memcheck.c compiled and run in its selftest modes
(each injecting one fault it must find), its build for the image, and the host-side parser."""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from vhostlm.errors import SetupError
from vhostlm.guests.memcheck import (
    MemcheckBad,
    MemcheckError,
    MemcheckReady,
    MemcheckScan,
    MemcheckStream,
    default_memcheck_mb,
    last_scan,
    memcheck_command,
    parse_lines,
    summarise,
)
from vhostlm.image import build, userland

INJECT_RE = re.compile(r"VHLMC inject mode=(\w+) page=(\d+) offset=(\d+)")


@pytest.fixture(scope="module")
def memcheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checker, built by the image builder's own function."""
    return userland.build_memcheck(tmp_path_factory.mktemp("memcheck") / "vhostlm-memcheck")


def _run(binary: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


# the program: build and selftests


def test_build_memcheck_gives_a_static_binary(memcheck: Path) -> None:
    assert os.access(memcheck, os.X_OK)
    elf = memcheck.read_bytes()
    assert elf[:4] == b"\x7fELF"
    # static: no program interpreter (PT_INTERP) for the guest to find
    phoff, phentsize, phnum = (
        struct.unpack_from("<Q", elf, 32)[0],
        *struct.unpack_from("<HH", elf, 54),
    )
    types = [struct.unpack_from("<I", elf, phoff + i * phentsize)[0] for i in range(phnum)]
    assert types and 3 not in types  # PT_INTERP


def test_build_memcheck_without_gcc_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(userland.shutil, "which", lambda *a, **k: None)
    with pytest.raises(SetupError, match="apt-get install gcc libc6-dev"):
        userland.build_memcheck(tmp_path / "x")


def test_build_memcheck_compile_error_is_a_setup_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        userland, "MEMCHECK_CFLAGS", ("-DNOT_C=1", "-x", "c", "-include", "/no/such.h")
    )
    with pytest.raises(SetupError, match="could not build the guest's memory checker"):
        userland.build_memcheck(tmp_path / "x")


def test_image_cache_key_follows_the_checker_source(monkeypatch: pytest.MonkeyPatch) -> None:
    base = userland.hash_memcheck()
    assert list(base) == ["/usr/bin/vhostlm-memcheck"]
    assert userland.hash_memcheck() == base
    source = userland.memcheck_source()
    assert b"VHLMC scan=" in source
    monkeypatch.setattr(userland, "memcheck_source", lambda: source + b"\n")
    assert userland.hash_memcheck() != base
    # build.py puts it into the image's cache key, with every other input
    assert build.hash_memcheck is userland.hash_memcheck
    assert build.MEMCHECK == userland.MEMCHECK


def test_selftest_clean_finds_nothing(memcheck: Path) -> None:
    proc = _run(memcheck, "--selftest", "clean")
    assert proc.returncode == 0, proc.stderr
    records = parse_lines(proc.stdout)
    ready = records[0]
    assert isinstance(ready, MemcheckReady) and ready.pages == 1024 and ready.mb == 4
    scans = [r for r in records if isinstance(r, MemcheckScan)]
    assert len(scans) > 10 and all(s.bad == 0 and s.pages == 1024 for s in scans)
    assert scans[-1].gen >= 4  # the writer went round the region more than twice
    assert [s.scan for s in scans] == list(range(1, len(scans) + 1))
    assert not [r for r in records if isinstance(r, MemcheckBad)]


@pytest.mark.parametrize(
    ("mode", "kind", "gen_step"),
    [
        ("stale", "stale", 1),  # a missed dirty page: its previous generation came back
        ("flip", "corrupt", 0),  # one byte of the body flipped: found by the writer's check
        ("foreign", "foreign", 0),  # another page's content: found by the header scan
    ],
)
def test_selftest_finds_the_injected_fault(
    memcheck: Path, mode: str, kind: str, gen_step: int
) -> None:
    proc = _run(memcheck, "--selftest", mode)
    assert proc.returncode == 0, proc.stderr
    inject = INJECT_RE.search(proc.stdout)
    assert inject is not None and inject.group(1) == mode
    page, offset = int(inject.group(2)), int(inject.group(3))
    after = proc.stdout[inject.end() :]
    bad = [r for r in parse_lines(after) if isinstance(r, MemcheckBad)]
    assert len(bad) == 1, proc.stdout
    assert (bad[0].page, bad[0].kind, bad[0].offset) == (page, kind, offset)
    assert bad[0].expect_gen == bad[0].seen_gen + gen_step
    summary = summarise(after)
    assert summary.pages_bad == 1 and summary.first_bad == bad[0]
    assert not summary.ok
    # counted once, repaired: every later scan still says 1 and no second bad line
    scans = [r for r in parse_lines(after) if isinstance(r, MemcheckScan)]
    assert scans[-1].bad == 1


def test_flip_offset_is_the_flipped_byte(memcheck: Path) -> None:
    proc = _run(memcheck, "--selftest", "flip")
    assert "offset=1234" in proc.stdout and "kind=corrupt" in proc.stdout


@pytest.mark.parametrize(
    "args",
    [["--mb", "0"], ["--mb", "x"], ["--mb", "-3"], [], ["--bogus"], ["--mb", "4", "extra"],
     ["--selftest", "nope"], ["--mb", "1", "--scan-ms", "0"], ["--mb", "1", "--out", "/no/dir/x"]],
)  # fmt: skip
def test_bad_arguments_exit_2_with_a_message(memcheck: Path, args: list[str]) -> None:
    proc = _run(memcheck, *args)
    assert proc.returncode == 2
    assert proc.stderr.strip() and not proc.stdout


def test_real_loop_paces_writes_and_stops_on_sigterm(memcheck: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    proc = subprocess.Popen(
        [str(memcheck), "--mb", "8", "--rate-mb-s", "8", "--scan-ms", "100", "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            not out.exists() or out.read_text().count("scan=") < 6
        ):
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    records = parse_lines(out.read_text())
    ready = records[0]
    assert isinstance(ready, MemcheckReady) and ready.pages == 2048 and ready.rate_mb_s == 8
    scans = [r for r in records if isinstance(r, MemcheckScan)]
    assert len(scans) >= 6 and all(s.bad == 0 for s in scans)
    # 8 MiB/s is 2048 pages/s: allow a loaded machine its slack, but not a stuck writer
    rate = (scans[-2].written - scans[0].written) * 1000 / max(1, scans[-2].ms - scans[0].ms)
    assert 1200 < rate < 2600, rate


def test_out_on_a_tty_is_raw(memcheck: Path) -> None:
    master, slave = os.openpty()
    try:
        name = os.ttyname(slave)
        proc = _run(memcheck, "--mb", "1", "--selftest", "clean", "--out", name)
        assert proc.returncode == 0, proc.stderr
        data = b""
        os.set_blocking(master, False)
        try:
            while chunk := os.read(master, 65536):
                data += chunk
        except BlockingIOError:
            pass
    finally:
        os.close(master)
        os.close(slave)
    text = data.decode()
    assert text.startswith("VHLMC ready pages=256 mb=1 ")
    assert "\r" not in text  # raw mode: no CR added to each line
    assert summarise(text).scans >= 1


# the host side: command and parser


@pytest.mark.parametrize(
    ("body", "mode", "status"),
    [("", 0o644, "12[67]"), ("#!/bin/sh\nkill -SEGV $$\n", 0o755, "139")],
    ids=["not-executable", "crashed"],
)
def test_a_checker_that_cannot_run_or_dies_says_so_on_its_port(
    tmp_path: Path, body: str, mode: int, status: str
) -> None:
    """Run the command for real in sh, with a checker that cannot execute (126 or, for a
    shell that skips a non-executable file on PATH, 127) or is killed by a signal: its
    port gets an error line that summarise() reports, so the start fails at once."""
    checker = tmp_path / "bin" / "vhostlm-memcheck"
    checker.parent.mkdir()
    checker.write_text(body)
    checker.chmod(mode)
    port = tmp_path / "ttyS1"
    env = {**os.environ, "PATH": f"{checker.parent}:{os.environ['PATH']}"}
    subprocess.run(["sh", "-c", memcheck_command(4, 0, out=str(port)) + " wait"], env=env,
                   check=True, timeout=10)  # fmt: skip
    line = port.read_text()
    assert re.fullmatch(rf"vhostlm-memcheck: exited with status {status}\n", line)
    (error,) = summarise(line).errors
    assert re.fullmatch(rf"exited with status {status}", error)


def test_memcheck_command() -> None:
    assert memcheck_command(256, 8).startswith(
        "{ vhostlm-memcheck --mb 256 --rate-mb-s 8 --out /dev/ttyS1 </dev/null >/dev/null || "
    )
    assert "--out /dev/ttyS2 " in memcheck_command(1, 0, out="/dev/ttyS2")
    with pytest.raises(ValueError):
        memcheck_command(0, 8)
    with pytest.raises(ValueError):
        memcheck_command(4, -1)


def test_default_region_is_a_quarter_of_guest_ram() -> None:
    assert default_memcheck_mb(1024) == 256
    assert default_memcheck_mb(2048) == 512


SAMPLE = (
    "VHLMC ready pages=65536 mb=256 rate_mb_s=8 first_gpa=0x3a2f1000\r\n"
    "VHLMC scan=1 pages=65536 bad=0 written=1024 gen=2 ms=5012\r\n"
    "VHLMC scan=2 pages=65536 bad=0 written=2048 gen=2 ms=5512\r\n"
    "VHLMC bad page=4242 gpa=0x7b3c2000 kind=stale seen_gen=2 expect_gen=3 offset=8\r\n"
    "VHLMC bad page=77 gpa=0x1000 kind=corrupt seen_gen=3 expect_gen=3 offset=1234\r\n"
    "VHLMC scan=3 pages=65536 bad=2 written=3072 gen=3 ms=6013\r\n"
    "VHLMC scan=4 pages=65536 bad=2 written=4096 gen=3 ms=6513\n"
)


def test_parse_lines_reads_every_kind() -> None:
    records = parse_lines(SAMPLE + "vhostlm-memcheck: mmap of 9 MiB failed: nope\n")
    assert records[0] == MemcheckReady(65536, 256, 8, 0x3A2F1000)
    assert records[1] == MemcheckScan(1, 65536, 0, 1024, 2, 5012)
    assert records[3] == MemcheckBad(4242, 0x7B3C2000, "stale", 2, 3, 8)
    assert records[-1] == MemcheckError("mmap of 9 MiB failed: nope")
    assert len(records) == 8


def test_parse_lines_keeps_whole_lines_only() -> None:
    # a piece ending mid-line, and a piece starting mid-line (its head went elsewhere)
    assert parse_lines("VHLMC scan=1 pages=8 bad=0 wri") == []
    assert parse_lines("ages=8 bad=0 written=1 gen=2 ms=3\nnoise\n") == []
    assert parse_lines("junk VHLMC scan=1 pages=8 bad=0 written=1 gen=2 ms=3\n") == [
        MemcheckScan(1, 8, 0, 1, 2, 3)
    ]


def test_stream_joins_a_line_cut_in_two() -> None:
    stream = MemcheckStream()
    pieces = [SAMPLE[:20], SAMPLE[20:130], SAMPLE[130:131], SAMPLE[131:250], SAMPLE[250:]]
    got = [r for piece in pieces for r in stream.feed(piece)]
    assert got == parse_lines(SAMPLE)
    assert stream.feed("VHLMC scan=5 pages=65536 ") == []
    assert stream.feed("bad=2 written=5120 gen=3 ms=7013\n") == [
        MemcheckScan(5, 65536, 2, 5120, 3, 7013)
    ]


def test_summarise_after_the_switchover() -> None:
    summary = summarise(SAMPLE)
    assert summary.scans == 3  # the first scan line may have begun before the mark
    assert summary.pages_checked == 65536
    assert summary.pages_bad == 2
    assert summary.pages_rewritten == 3072
    assert summary.first_bad == MemcheckBad(4242, 0x7B3C2000, "stale", 2, 3, 8)
    assert len(summary.bad) == 2 and not summary.ok
    assert summary.describe().startswith("pages_checked 65536, pages_bad 2, first bad: page 4242")
    assert "guest-physical 0x7b3c2000 stale" in summary.describe()
    data = summary.as_dict()
    assert data["first_bad"]["gpa"] == 0x7B3C2000 and data["scans"] == 3
    # a bad total carried from before the mark (an earlier leg) is not counted again
    assert summarise(SAMPLE, baseline_bad=2).pages_bad == 2  # the two bad lines are new
    clean = "".join(
        ln for ln in SAMPLE.replace("bad=2", "bad=0").splitlines(True) if "bad " not in ln
    )
    assert summarise(clean).pages_bad == 0 and summarise(clean).ok


def test_summary_without_a_complete_scan_is_distinguishable() -> None:
    for text in ("", "VHLMC scan=9 pages=8 bad=0 written=1 gen=2 ms=3\n", "VHLMC scan=9 pa"):
        summary = summarise(text)
        assert summary.scans == 0 and summary.pages_checked == 0 and not summary.ok
        assert summary.describe() == "the memory checker printed no scan after the switch-over"
    clean = "".join(f"VHLMC scan={i} pages=8 bad=0 written={i} gen=2 ms={i}\n" for i in (1, 2))
    assert summarise(clean).ok and summarise(clean).scans == 1
    assert summarise(clean).describe() == "pages_checked 8, pages_bad 0"
    failed = summarise("vhostlm-memcheck: mmap of 256 MiB failed: Cannot allocate memory\n")
    assert failed.describe().startswith("the memory checker failed: mmap of 256 MiB")


def test_last_scan_gives_the_baseline() -> None:
    scan = last_scan(SAMPLE)
    assert scan is not None and scan.bad == 2 and scan.scan == 4
    assert last_scan("nothing\n") is None
