"""How many runs of a missed-dirty-page load each of vhostlm's checks catches, per QEMU.

Runs `vhostlm run --case dirty_rx_virtio_net --verify-ram --qemu PATH` N times (DPDK sends
into the guest at full speed while the guest dirties 64 MiB/s and the memory checker
rewrites its region: bench/crash_repro.py's vhost-rx load as a vhostlm case) and prints,
per check, how many runs it caught, and for each catch whether it came before the guest
crashed (or without a crash):

- ram: --verify-ram, destination pages unlike the source's, before the destination runs;
- memory: the in-guest checker's bad pages;
- payload: probe replies with a wrong payload (the flood replaces the probes in this case:
  n/a unless --case names a case with probes);
- anomalies: fatal lines of the backends and QEMUs;
- guest crash: the guest kernel's panic, oops or backtrace on a console;
- traffic: the guest did not receive after the switch-over.

`--qemu debian-7.2` fetches Debian 12's own QEMU 7.2 (`apt-get download`, `dpkg -x` into
--cache; it is never installed over the system's QEMU) and runs it through a wrapper that
gives it its own data directory (-L). Run as root, e.g.:

    python bench/detect_bench.py --qemu debian-7.2 --runs 4
    python bench/detect_bench.py --qemu /usr/bin/qemu-system-x86_64 --runs 20
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CASE = "dirty_rx_virtio_net"
QEMU72 = {  # Debian 12's QEMU (bookworm main), the one that loses TCG guest writes
    "qemu-system-x86": "1:7.2+dfsg-7+deb12u18+b3",
    "qemu-system-common": "1:7.2+dfsg-7+deb12u18+b3",
    "qemu-system-data": "1:7.2+dfsg-7+deb12u18",
}
CHECKS = ("ram", "memory", "payload", "anomalies", "guest crash", "traffic")
SYMPTOMS = ("guest crash", "traffic")  # what the integrity checks are to come before
CRASH_PATTERNS = ("guest_panic", "guest_oops", "guest_call_trace", "guest_list_corruption")
WRAPPER = """#!/bin/sh
# Debian 12's QEMU 7.2, unpacked here; its firmware from this machine's seabios and ipxe
exec {root}/usr/bin/qemu-system-x86_64 -L {root}/usr/share/qemu -L /usr/share/seabios \\
    -L /usr/lib/ipxe/qemu "$@"
"""


def debian_qemu72(cache: Path) -> Path:
    """Debian 12's QEMU 7.2 unpacked into `cache` (downloaded once); its wrapper script."""
    wrapper = cache / "qemu-system-x86_64"
    root = cache / "root"
    if not (root / "usr/bin/qemu-system-x86_64").exists():
        debs = cache / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        wanted = [f"{name}={version}" for name, version in QEMU72.items()]
        subprocess.run(["apt-get", "download", *wanted], cwd=debs, check=True)
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    wrapper.write_text(WRAPPER.format(root=root))
    wrapper.chmod(0o755)
    return wrapper


def caught(case: dict[str, Any]) -> dict[str, float | None]:
    """Check -> the time it caught the run (ms from the case's start; 0 for the RAM check,
    which runs before the destination does), for the checks that caught it."""
    integrity = case["integrity"]
    found: dict[str, float | None] = {}
    if integrity.get("ram_pages_differ"):
        found["ram"] = 0.0
    if integrity.get("pages_bad"):
        times = [p["at_ms"] for p in integrity.get("bad_pages", []) if p.get("at_ms") is not None]
        found["memory"] = min(times) if times else None
    bad_payload = sum(integrity.get(k, 0) for k in ("payload_corrupt", "payload_foreign"))
    if bad_payload:
        found["payload"] = None
    anomalies = integrity.get("anomalies", [])
    fatal = [a for a in anomalies if a["severity"] == "fatal"]
    crashes = [a for a in fatal if a["pattern"] in CRASH_PATTERNS]
    if crashes:
        found["guest crash"] = min(a["at_ms"] for a in crashes)
    others = [a for a in fatal if a["pattern"] not in CRASH_PATTERNS]
    if others:
        found["anomalies"] = min(a["at_ms"] for a in others)
    after = [s for s in case["steps"] if s["name"].startswith("receives_after_migration")]
    if any(s["verdict"] != "pass" for s in after):
        found["traffic"] = None
    return found


def one_run(qemu: str, case: str, out: Path, extra: list[str]) -> dict[str, Any]:
    """One `vhostlm run`; its only case from results.json."""
    argv = [sys.executable, "-m", "vhostlm", "run", "--case", case, "--verify-ram",
            "--qemu", qemu, "--output", str(out), *extra]  # fmt: skip
    subprocess.run(argv, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    cases: list[dict[str, Any]] = json.loads((out / "results.json").read_text())["cases"]
    return cases[0]


def main() -> int:
    """Run the case --runs times and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qemu", required=True, help="a QEMU binary, or debian-7.2")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--case", default=CASE)
    parser.add_argument("--cache", type=Path, default=Path("/var/cache/vhostlm/qemu-7.2"))
    parser.add_argument("extra", nargs="*", help="more `vhostlm run` options, after --")
    args = parser.parse_args()
    qemu = str(debian_qemu72(args.cache)) if args.qemu == "debian-7.2" else args.qemu
    version = subprocess.run([qemu, "--version"], capture_output=True, text=True, check=True)
    print(f"{version.stdout.splitlines()[0]}: {args.runs} runs of {args.case}", flush=True)
    counts = dict.fromkeys(CHECKS, 0)
    early = dict.fromkeys(CHECKS, 0)
    broken = 0
    with tempfile.TemporaryDirectory(prefix="detect-") as tmp:
        for n in range(args.runs):
            case = one_run(qemu, args.case, Path(tmp) / f"run{n + 1}", args.extra)
            found = caught(case)
            crash = found.get("guest crash")
            broken += bool(found)
            for check, at in found.items():
                counts[check] += 1
                # before the guest crashed, or with no crash at all
                early[check] += crash is None or (at is not None and at <= crash) or check == "ram"
            integrity = case["integrity"]
            print(
                f"run {n + 1}: {case['verdict']}; caught by {', '.join(found) or 'nothing'}; "
                f"ram pages differing {integrity.get('ram_pages_differ', 0)}, "
                f"memcheck pages bad {integrity.get('pages_bad', 0)} of "
                f"{integrity.get('pages_checked', 0)} checked; {case['reason'][:160]}",
                flush=True,
            )
    payload_ran = "payload" in case["integrity"].get("checks", [])
    print(f"\n{broken} of {args.runs} runs showed lost guest state\n")
    print("| check | runs caught | of them, before a guest crash or without one |")
    print("|---|---|---|")
    for check in CHECKS:
        if check == "payload" and not payload_ran:
            print("| payload | n/a (the flood replaces the probes in this case) | |")
            continue
        before = "" if check in SYMPTOMS else str(early[check])
        print(f"| {check} | {counts[check]} of {args.runs} | {before} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
