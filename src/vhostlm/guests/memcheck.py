"""The in-guest memory checker (vhostlm-memcheck, image/memcheck.c): its command and its lines.

It owns a region of guest RAM, rewrites it at a known rate during the migration and checks
every page, so a page the migration missed (written but never sent again: the destination
runs on stale memory) is named after the switch-over. It prints `VHLMC ...` lines on a
serial port of its own; this module starts it and turns those lines into a summary.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

MEMCHECK_BIN = "vhostlm-memcheck"
"""The checker's program name in the guest image (/usr/bin/vhostlm-memcheck)."""

DEFAULT_OUT = "/dev/ttyS1"
"""Where the checker writes its lines: the guest's second serial port, read by the host."""

MAX_REPORTED = 16
"""The checker prints a `bad` line for the first 16 bad pages only; it counts every one."""

_HEX = r"0x[0-9a-fA-F]+"
_READY_RE = re.compile(rf"VHLMC ready pages=(\d+) mb=(\d+) rate_mb_s=(\d+) first_gpa=({_HEX})\s*$")
_SCAN_RE = re.compile(
    r"VHLMC scan=(\d+) pages=(\d+) bad=(\d+) written=(\d+) gen=(\d+) ms=(\d+)\s*$"
)
_BAD_RE = re.compile(
    rf"VHLMC bad page=(\d+) gpa=({_HEX}) kind=(stale|corrupt|foreign) seen_gen=(\d+) "
    r"expect_gen=(\d+) offset=(-?\d+)\s*$"
)
_ERROR_RE = re.compile(rf"{MEMCHECK_BIN}: (.+?)\s*$")


@dataclass(frozen=True)
class MemcheckReady:
    """The checker wrote its region once and runs: its size, rate and first page's address."""

    pages: int
    mb: int
    rate_mb_s: int
    first_gpa: int  # guest-physical address of page 0; 0 when pagemap was unreadable


@dataclass(frozen=True)
class MemcheckScan:
    """One complete header scan of every page, with the checker's running totals."""

    scan: int  # scans so far, from 1
    pages: int  # pages the scan checked: the whole region
    bad: int  # distinct bad pages found since the checker started
    written: int  # pages the writer rewrote (each verified in full first) so far
    gen: int  # the writer's current generation
    ms: int  # the guest's CLOCK_MONOTONIC at the scan's end


@dataclass(frozen=True)
class MemcheckBad:
    """A bad page: stale (an older generation of itself: a missed dirty page), foreign
    (another page's content) or corrupt (anything else), with its first wrong byte."""

    page: int
    gpa: int
    kind: str
    seen_gen: int
    expect_gen: int
    offset: int  # byte offset in the page of the first byte that differs

    def describe(self) -> str:
        """One line for a reason: page, guest-physical address, kind, generations, offset."""
        return (
            f"page {self.page} at guest-physical {self.gpa:#x} {self.kind} "
            f"(generation {self.seen_gen}, expected {self.expect_gen}, "
            f"first bad byte at offset {self.offset})"
        )


@dataclass(frozen=True)
class MemcheckError:
    """A line the checker printed when it could not run (bad arguments, no memory)."""

    message: str


MemcheckLine = MemcheckReady | MemcheckScan | MemcheckBad | MemcheckError


def memcheck_command(mb: int, rate_mb_s: int, out: str = DEFAULT_OUT) -> str:
    """The guest shell command that starts the checker in the background on `mb` MiB,
    rewriting `rate_mb_s` MiB/s, its lines on `out` (stdin and stdout off the console).
    A checker that cannot start (not executable: a noexec mount) or dies says so on `out`
    as an error line, so the run fails at once with the shell's status, not at a timeout."""
    if mb < 1:
        raise ValueError(f"memory checker region must be at least 1 MiB, not {mb}")
    if rate_mb_s < 0:
        raise ValueError(f"memory checker rate must be 0 or more MiB/s, not {rate_mb_s}")
    tty = shlex.quote(out)
    return (
        f"{{ {MEMCHECK_BIN} --mb {mb} --rate-mb-s {rate_mb_s} --out {tty} </dev/null "
        f'>/dev/null || echo "{MEMCHECK_BIN}: exited with status $?" >{tty}; }} &'
    )


def default_memcheck_mb(guest_mem_mb: int) -> int:
    """The checker's default region: a quarter of the guest's RAM."""
    return guest_mem_mb // 4


def _parse_line(line: str) -> MemcheckLine | None:
    """One line of channel text as a checker record, None when it is not one."""
    start = line.find("VHLMC ")
    if start >= 0:
        body = line[start:]
        if m := _SCAN_RE.match(body):
            return MemcheckScan(*(int(g) for g in m.groups()))
        if m := _BAD_RE.match(body):
            page, gpa, kind, seen, expect, offset = m.groups()
            return MemcheckBad(int(page), int(gpa, 16), kind, int(seen), int(expect), int(offset))
        if m := _READY_RE.match(body):
            pages, mb, rate, gpa = m.groups()
            return MemcheckReady(int(pages), int(mb), int(rate), int(gpa, 16))
        return None
    if m := _ERROR_RE.search(line):
        return MemcheckError(m.group(1))
    return None


def parse_lines(text: str) -> list[MemcheckLine]:
    """The checker records in `text`, whole lines only: a last line without its newline
    (the rest is still on its way) and lines cut at the start are left out."""
    end = text.rfind("\n")
    if end < 0:
        return []
    records: list[MemcheckLine] = []
    for line in text[:end].split("\n"):
        record = _parse_line(line.rstrip("\r"))
        if record is not None:
            records.append(record)
    return records


class MemcheckStream:
    """Parses the checker's output as it arrives in pieces: feed() returns the records of
    the lines the new piece completes and keeps the unfinished rest for the next one."""

    def __init__(self) -> None:
        self._rest = ""

    def feed(self, chunk: str) -> list[MemcheckLine]:
        """Records of the lines completed by `chunk`."""
        text = self._rest + chunk
        end = text.rfind("\n")
        self._rest = text[end + 1 :]
        return parse_lines(text[: end + 1]) if end >= 0 else []


@dataclass(frozen=True)
class MemcheckSummary:
    """What the checker saw after a mark (the switch-over).

    scans counts the header scans that ran wholly after the mark: every scan line in the
    text but the first, which may come from a scan begun (or a line buffered) before it.
    pages_checked is the number of pages each of them verified (the whole region) when
    scans >= 1, else 0: every page was checked at least once after the mark. scans == 0
    means no such scan: the caller cannot claim anything about the memory.
    pages_bad counts distinct bad pages found after the mark (the last scan's total less
    `baseline_bad`, at least the bad lines seen); bad holds the first ones reported.
    """

    scans: int = 0
    pages_checked: int = 0
    pages_bad: int = 0
    pages_rewritten: int = 0  # pages the writer verified in full and rewrote after the mark
    gen: int = 0
    bad: tuple[MemcheckBad, ...] = ()
    errors: tuple[str, ...] = ()
    ready: MemcheckReady | None = None
    scan_lines: int = field(default=0, repr=False)  # every scan line, the first one too

    @property
    def first_bad(self) -> MemcheckBad | None:
        """The first bad page reported, None when there is none."""
        return self.bad[0] if self.bad else None

    @property
    def ok(self) -> bool:
        """At least one whole scan after the mark, no bad page, no error."""
        return self.scans >= 1 and self.pages_bad == 0 and not self.errors

    def describe(self) -> str:
        """One line: the figures, the first bad page, or why there are none."""
        if self.errors:
            return f"the memory checker failed: {self.errors[0]}"
        if self.scans == 0 and self.pages_bad == 0:
            return "the memory checker printed no scan after the switch-over"
        text = f"pages_checked {self.pages_checked}, pages_bad {self.pages_bad}"
        if self.first_bad is not None:
            text += f", first bad: {self.first_bad.describe()}"
        return text

    def as_dict(self) -> dict[str, Any]:
        """Plain values for results.json."""
        data = asdict(self)
        data.pop("scan_lines")
        data["first_bad"] = asdict(self.first_bad) if self.first_bad else None
        return data


def summarise(text_after_switchover: str, baseline_bad: int = 0) -> MemcheckSummary:
    """The checker's figures from the text it printed after the switch-over.

    `baseline_bad` is the bad total of the last scan before the mark (0 for the first
    migration: any bad page since the checker started is then counted).
    """
    records = parse_lines(text_after_switchover)
    scans = [r for r in records if isinstance(r, MemcheckScan)]
    bad = tuple(r for r in records if isinstance(r, MemcheckBad))
    errors = tuple(r.message for r in records if isinstance(r, MemcheckError))
    ready = next((r for r in records if isinstance(r, MemcheckReady)), None)
    whole = scans[1:]
    distinct_bad = len({b.page for b in bad})
    pages_bad = max(scans[-1].bad - baseline_bad, distinct_bad) if scans else distinct_bad
    return MemcheckSummary(
        scans=len(whole),
        pages_checked=whole[-1].pages if whole else 0,
        pages_bad=pages_bad,
        pages_rewritten=scans[-1].written - scans[0].written if scans else 0,
        gen=scans[-1].gen if scans else 0,
        bad=bad,
        errors=errors,
        ready=ready,
        scan_lines=len(scans),
    )


def last_scan(text: str) -> MemcheckScan | None:
    """The last complete scan line in `text` (e.g. before a mark, for `baseline_bad`)."""
    scans = [r for r in parse_lines(text) if isinstance(r, MemcheckScan)]
    return scans[-1] if scans else None
