"""Reproduce the destination-guest crash of issue 4 without vhostlm's cases.

Two QEMUs (TCG, 1 vCPU, the vhostlm guest image) on this machine, a guest that dirties
64 MiB/s, an auto-converge migration over a unix socket, and the guest's console watched
on the destination for 6 s. Modes:

- ``private``: plain guest RAM, no NIC;
- ``memfd``: shared memfd RAM (as vhost-user needs), no NIC;
- ``vhost-idle``: plus a vhost-user virtio-net on a DPDK testpmd per side, link up,
  testpmd not forwarding (DPDK never touches the rings; with ``start`` in io mode a single
  port loops the guest's own frames back into it, which already broke 1 run of 3);
- ``vhost-rx``: the same with testpmd in ``txonly`` mode: DPDK writes packets into the
  guest's receive buffers during the migration.

Measured on this machine (DPDK 22.11): with Debian 12's QEMU 7.2, ``vhost-rx`` broke the
destination guest (hang or oops) in 3 of 4 runs, the others in none; with QEMU 10.0.2
(bookworm-backports) ``vhost-rx`` broke 0 of 4. The fix is QEMU 9.0's "physmem: Fix
migration dirty bitmap coherency with TCG memory access": the bitmap sync left TCG's TLB
dirty state alone, so later guest writes through cached entries were never re-sent. Run as
root: ``python bench/crash_repro.py vhost-rx --runs 4``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qemu.qmp.legacy import QEMUMonitorProtocol

from vhostlm.addresses import GUEST_MAC, QEMU_BINARY, TESTPMD_BINARY
from vhostlm.apps.console import Console, GuestShell
from vhostlm.apps.guest import guest_crash
from vhostlm.guests.contract import READY_MARKER
from vhostlm.guests.initramfs import start_dirty_load
from vhostlm.image.build import build_image
from vhostlm.nodes.local import LocalNode
from vhostlm.runner import CACHE_DIR

MODES = ("private", "memfd", "vhost-idle", "vhost-rx")


def qemu_argv(mode: str, kernel: Path, initrd: Path, d: Path, name: str) -> list[str]:
    """One QEMU of the pair (`name` src or dst)."""
    argv = [
        QEMU_BINARY, "-name", name, "-machine", "pc", "-accel", "tcg",
        "-cpu", "Nehalem", "-m", "1024M", "-smp", "1", "-kernel", str(kernel),
        "-initrd", str(initrd), "-append", "console=ttyS0 init_on_alloc=0 panic=-1 quiet",
        "-chardev", f"socket,id=ser0,path={d}/{name}-con.sock,server=on,wait=off",
        "-serial", "chardev:ser0", "-qmp", f"unix:{d}/{name}-qmp.sock,server=on,wait=off",
        "-display", "none", "-nodefaults", "-no-user-config",
    ]  # fmt: skip
    if mode != "private":
        argv += ["-object", "memory-backend-memfd,id=mem,size=1024M,share=on",
                 "-numa", "node,memdev=mem"]  # fmt: skip
    if mode.startswith("vhost"):
        argv += ["-chardev", f"socket,id=char0,path={d}/{name}-vhost.sock",
                 "-netdev", "type=vhost-user,id=netdev0,chardev=char0,vhostforce=on",
                 "-device", f"virtio-net-pci,netdev=netdev0,mac={GUEST_MAC},vectors=0"]  # fmt: skip
    if name == "dst":
        argv += ["-incoming", f"unix:{d}/mig.sock"]
    return argv


def testpmd(mode: str, d: Path, name: str) -> subprocess.Popen[str]:
    """A vhost testpmd without hugepages; sending into the guest (txonly) for vhost-rx only."""
    proc = subprocess.Popen(
        [TESTPMD_BINARY, "-l", "0-1", "--no-huge", "-m", "256", "--no-pci",
         "--file-prefix", f"repro-{d.name}-{name}",
         "--vdev", f"net_vhost0,iface={d}/{name}-vhost.sock,queues=1",
         "--", "-i", "--total-num-mbufs=8192"],
        stdin=subprocess.PIPE, stdout=open(d / f"testpmd-{name}.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdin is not None
    if mode == "vhost-rx":  # vhost-idle: no forwarding, so DPDK never touches the rings
        proc.stdin.write("set fwd txonly\nstart\n")
        proc.stdin.flush()
    return proc


def one_run(mode: str, d: Path) -> str:
    """One migration; a line saying whether the destination guest kept running."""
    img = build_image(CACHE_DIR / "images")
    procs: list[subprocess.Popen[str]] = []
    here = LocalNode("repro")
    try:
        if mode.startswith("vhost"):
            procs += [testpmd(mode, d, "src"), testpmd(mode, d, "dst")]
            for name in ("src", "dst"):
                here.wait_socket(str(d / f"{name}-vhost.sock"), 20)
        for name in ("src", "dst"):
            argv = qemu_argv(mode, img.kernel, img.initrd, d, name)
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, text=True,
                                          stderr=subprocess.DEVNULL))  # fmt: skip
            here.wait_socket(str(d / f"{name}-qmp.sock"), 20)
        src_con = Console("src", d / "src-con.sock", d / "src.log").connect()
        dst_con = Console("dst", d / "dst-con.sock", d / "dst.log").connect()
        src_qmp = QEMUMonitorProtocol(str(d / "src-qmp.sock"))
        src_qmp.connect()
        src_con.output.expect(READY_MARKER, 90)
        shell = GuestShell(src_con)
        shell.wait_prompt(30)
        if mode.startswith("vhost"):
            shell.run("ip link set eth0 up")
        start_dirty_load(shell, 64)
        shell.run("(while :; do echo TICK; usleep 500000; done) &")
        src_qmp.cmd("migrate-set-capabilities",
                    capabilities=[{"capability": "auto-converge", "state": True}])  # fmt: skip
        src_qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 16_000_000,
                    "downtime-limit": 50, "cpu-throttle-initial": 50,
                    "cpu-throttle-increment": 25})  # fmt: skip
        src_qmp.cmd("migrate", uri=f"unix:{d}/mig.sock")
        deadline = time.monotonic() + 120
        while src_qmp.cmd("query-migrate")["status"] not in ("completed", "failed"):
            if time.monotonic() > deadline:
                return "migration did not end in 120 s"
            time.sleep(0.2)
        dst_con.output.wait_for(lambda text: guest_crash(text) is not None, 6)
        out = dst_con.output.text()
        crash = guest_crash(out)
        ticks = out.count("TICK")
        if crash:
            return f"destination guest crashed: {crash[:100]}"
        return "ok" if ticks >= 5 else f"destination guest silent ({ticks} ticks in 6 s)"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def main() -> int:
    """Run one mode N times and print each outcome."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    bad = 0
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="repro-", dir="/run") as tmp:
            outcome = one_run(args.mode, Path(tmp))
        bad += outcome != "ok"
        print(f"{args.mode} run {run + 1}: {outcome}", flush=True)
    print(f"{args.mode}: {bad} of {args.runs} runs broke the destination guest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
