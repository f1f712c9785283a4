"""Did the backup announce the guest? RARP or gratuitous ARP seen on the backup's switch port.

After a switch-over QEMU (or the guest) announces the guest's MAC so that switches learn
its new port. tcpdump on the backup's port in the switch namespace records when.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LINE_RE = re.compile(
    r"^(?P<ts>\d+\.\d+) (?P<src>[0-9a-f:]{17}) > (?P<dst>\S+), ethertype (?P<rest>.*)$", re.M
)
GARP_RE = re.compile(r"who-has (\S+) tell (\S+),")


@dataclass(frozen=True)
class Announcement:
    """One announcing frame: when, and whether it was a RARP or a gratuitous ARP."""

    at: float
    kind: str  # "rarp" | "garp" | "arp"


def tcpdump_argv(iface: str, mac: str) -> list[str]:
    """tcpdump printing epoch-stamped link-level lines for the guest's (R)ARP frames."""
    return ["tcpdump", "-i", iface, "-l", "-nn", "-e", "-tt", "-Q", "in",
            f"ether src {mac} and (rarp or arp)"]  # fmt: skip


def parse_announcements(text: str) -> list[Announcement]:
    """Announcements in tcpdump output, in order."""
    found = []
    for m in LINE_RE.finditer(text):
        rest = m["rest"]
        if "Reverse ARP" in rest:
            kind = "rarp"
        else:
            garp = GARP_RE.search(rest)
            kind = "garp" if garp and garp[1] == garp[2] else "arp"
        found.append(Announcement(at=float(m["ts"]), kind=kind))
    return found


def first_announcement(found: list[Announcement], after: float) -> Announcement | None:
    """The first RARP or gratuitous ARP at or after `after`."""
    return next((a for a in found if a.at >= after and a.kind in ("rarp", "garp")), None)
