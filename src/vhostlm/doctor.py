"""`vhostlm doctor`: can this testbed run the plan? Every check, a verdict and the fix.

Checks each node of a testbed file (or this machine for the embedded lab): reachable,
root or sudo, QEMU and DPDK versions and features, KVM, hugepages, the port, the shared
guest disk, and the migration port from host to backup. With `--backend ovs-dpdk`, also
OVS-DPDK on host and backup: its programs, its version, that it was built with DPDK and
supports vhost-user client ports.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vhostlm.addresses import OVS_PACKAGE, QEMU_BINARY, TESTPMD_BINARY
from vhostlm.apps.ovs import VHOST_CLIENT_OVS, OvsTools, parse_ovs_version
from vhostlm.apps.qemu import qemu_version
from vhostlm.backends.registry import DEFAULT_BACKEND
from vhostlm.errors import VhostlmError
from vhostlm.nodes.base import Node
from vhostlm.nodes.local import LocalNode
from vhostlm.nodes.ssh import SshNode
from vhostlm.rundir import RunDir
from vhostlm.testbed.model import PortSpec, TestbedSpec, load_testbed
from vhostlm.testbed.remote import free_hugepage_mb, make_node, remote_sha256

QEMU = QEMU_BINARY
PACKED_QEMU = (4, 2)  # packed=on on virtio-net-pci
# "physmem: Fix migration dirty bitmap coherency with TCG memory access" (QEMU 9.0): before
# it, TCG guest writes could miss the migration's dirty bitmap and the destination guest
# crashed (issue 4). KVM tracks dirty pages itself.
TCG_MIGRATION_QEMU = (9, 0)
PMDS = ("net_vhost", "net_virtio")
PMD_GLOB = "/usr/lib/*/dpdk/pmds-*/librte_{}.so*"


def qemu_fitness(version: tuple[int, int], kvm: bool) -> tuple[bool | None, str]:
    """The doctor's verdict on a QEMU version (ok / None for a warning / fail) and the fix."""
    if version < TCG_MIGRATION_QEMU:
        why = "QEMU >= 9.0: older TCG loses dirty pages in migration (the guest crashes)"
        if not kvm:
            return False, why
        return None, why + "; fine under KVM"
    if version < PACKED_QEMU:
        return None, "QEMU >= 4.2 for the packed-ring cases"
    return True, ""


@dataclass
class Check:
    """One line of the doctor's table."""

    node: str
    what: str
    ok: bool | None  # None: a warning, the plan can still run
    detail: str
    fix: str = ""


class Doctor:
    """Runs the checks and collects them; a failing check never stops the others."""

    def __init__(self) -> None:
        self.checks: list[Check] = []

    def add(self, node: str, what: str, ok: bool | None, detail: str, fix: str = "") -> bool:
        """Record a check; return whether it passed."""
        self.checks.append(Check(node, what, ok, detail, fix))
        return ok is not False

    def guarded(self, node: str, what: str, fn: Callable[..., None], *args: Any) -> None:
        """Run a check function; an error it raises becomes a failed check."""
        try:
            fn(*args)
        except (VhostlmError, OSError) as exc:
            self.add(node, what, False, str(exc).split(": ", 1)[-1][:120])

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return all(c.ok is not False for c in self.checks)

    def table(self) -> str:
        """The checks as an aligned text table."""
        rows = [("node", "check", "", "detail", "fix")]
        mark = {True: "ok", False: "FAIL", None: "warn"}
        rows += [(c.node, c.what, mark[c.ok], c.detail, c.fix) for c in self.checks]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        return "\n".join(
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
            for row in rows
        ).rstrip()

    # checks of one node ----------------------------------------------------------------
    def programs(self, role: str, node: Node, qemu: str, testpmd: str) -> None:
        """QEMU (version, packed ring), testpmd and its vhost and virtio PMDs, KVM."""
        kvm = node.execute(["test", "-w", "/dev/kvm"]).status == 0
        out = node.execute([qemu, "--version"])
        version = qemu_version(out.stdout) if out.status == 0 else None
        if version is None:
            self.add(role, "qemu", False, f"{qemu} not found", "apt-get install qemu-system-x86")
        else:
            ok, fix = qemu_fitness(version, kvm)
            self.add(role, "qemu", ok, f"{qemu} {version[0]}.{version[1]}", fix)
        if node.which(testpmd) is None:
            self.add(role, "testpmd", False, f"{testpmd} not found", "apt-get install dpdk-dev")
        else:
            self.add(role, "testpmd", True, node.which(testpmd) or testpmd)
        for pmd in PMDS:
            glob = PMD_GLOB.format(pmd)
            found = node.execute(["sh", "-c", f"ls {glob} 2>/dev/null | head -1"]).stdout.strip()
            package = f"librte-{pmd.replace('_', '-')}23"
            self.add(role, f"pmd {pmd}", bool(found), found or "not found",
                     "" if found else f"apt-get install {package}")  # fmt: skip
        detail = "/dev/kvm present (a boot probe decides)" if kvm else "TCG only"
        self.add(role, "kvm", True if kvm else None, detail,
                 "" if kvm else "guests run slower under TCG")  # fmt: skip

    def backend(self, role: str, node: Node, backend: str) -> None:
        """The vhost backend's own checks beyond testpmd's (`programs`): for ovs-dpdk, its
        programs, `ovs-vswitchd --version` (built with DPDK, vhost-user client ports)."""
        if backend != "ovs-dpdk":
            return
        tools = OvsTools()
        others = [b for b in tools.programs().values() if b != tools.vswitchd]
        missing = [b for b in others if node.which(b) is None]
        fix = f"apt-get install {OVS_PACKAGE}"
        self.add(role, "ovs programs", not missing,
                 f"not found: {', '.join(missing)}" if missing else f"{', '.join(others)} found",
                 fix if missing else "")  # fmt: skip
        out = node.execute([tools.vswitchd, "--version"])
        if out.status != 0:
            self.add(role, "ovs-vswitchd", False, f"{tools.vswitchd} not found", fix)
            return
        found = parse_ovs_version(out.stdout)
        self.add(role, "ovs-vswitchd", found.version is not None,
                 f"{tools.vswitchd}: {found.line}", "" if found.version else fix)  # fmt: skip
        self.add(role, "ovs dpdk", found.dpdk is not None,
                 f"DPDK {found.dpdk}" if found.dpdk else "built without DPDK",
                 "" if found.dpdk else f"{fix} (its ovs-vswitchd-dpdk)")  # fmt: skip
        if found.version is not None:
            client = found.version >= VHOST_CLIENT_OVS
            want = ".".join(map(str, VHOST_CLIENT_OVS))
            self.add(role, "ovs vhost client", client,
                     "dpdkvhostuserclient ports" if client else f"OVS older than {want}",
                     "" if client else f"OVS >= {want} for --vhost-mode client")  # fmt: skip

    def hugepages(self, role: str, node: Node, mount: str, need_mb: int) -> None:
        """The hugetlbfs mount and enough free hugepage memory."""
        fstype = node.execute(["findmnt", "-n", "-o", "FSTYPE", "-T", mount]).stdout.strip()
        self.add(role, "hugetlbfs", fstype == "hugetlbfs", f"{mount}: {fstype or 'absent'}",
                 "" if fstype == "hugetlbfs" else f"mount -t hugetlbfs none {mount}")  # fmt: skip
        free = free_hugepage_mb(node)
        self.add(role, "hugepages", free >= need_mb, f"{free} MiB free, {need_mb} MiB needed",
                 "" if free >= need_mb else "echo N > /proc/sys/vm/nr_hugepages")  # fmt: skip


def check_testbed(
    path: Path,
    rundir: RunDir,
    need_mb: int,
    qemu: str | None = None,
    backend: str = DEFAULT_BACKEND,
) -> Doctor:
    """Every check of a testbed file (with `qemu`, that binary on host and backup; with
    `backend`, that vhost backend's)."""
    spec: TestbedSpec = load_testbed(path)
    doc = Doctor()
    nodes: dict[str, Node] = {}
    for role in ("host", "backup", "tester"):
        nspec = getattr(spec.nodes, role)
        node = make_node(role, nspec, rundir)
        try:
            if isinstance(node, SshNode):
                node.connect()
            uid = node.run(["id", "-u"]).strip()
        except VhostlmError as exc:
            doc.add(role, "reachable", False, str(exc)[:160], "see the detail")
            continue
        nodes[role] = node
        doc.add(role, "reachable", True, node.label)
        sudo = uid == "0" or node.execute(["sudo", "-n", "true"]).status == 0
        doc.add(role, "root", sudo, f"uid {uid}" + ("" if uid == "0" else " with sudo"),
                "" if sudo else "log in as root or allow passwordless sudo")  # fmt: skip
        if role == "tester":
            scapy = node.execute([nspec.python, "-c", "import scapy"]).status == 0
            doc.add(role, "scapy", scapy, f"{nspec.python} -c 'import scapy'",
                    "" if scapy else "apt-get install python3-scapy")  # fmt: skip
            tcpdump = node.which("tcpdump") is not None
            doc.add(role, "tcpdump", tcpdump, "found" if tcpdump else "not found",
                    "" if tcpdump else "apt-get install tcpdump")  # fmt: skip
        else:
            binary = qemu or nspec.qemu
            doc.guarded(role, "programs", doc.programs, role, node, binary, nspec.testpmd)
            doc.guarded(role, "backend", doc.backend, role, node, backend)
            mount = nspec.hugepages.mount
            doc.guarded(role, "hugepages", doc.hugepages, role, node, mount, need_mb)
        doc.guarded(role, "port", _port, doc, role, node, nspec.port)
    if spec.guest.disk and {"host", "backup"} <= nodes.keys():
        doc.guarded("host+backup", "guest disk", _disk, doc, nodes, str(spec.guest.disk))
    if {"host", "backup"} <= nodes.keys():
        doc.guarded("host->backup", "migration", _migration, doc, nodes, spec, rundir)
    for node in nodes.values():
        node.close()
    return doc


def _port(doc: Doctor, role: str, node: Node, port: PortSpec) -> None:
    assert port.driver is not None or port.interface is not None
    if port.interface:
        ok = node.execute(["ip", "link", "show", port.interface]).status == 0
        doc.add(role, "port", ok, f"interface {port.interface}" + ("" if ok else " absent"),
                "" if ok else f"check nodes.{role}.port.interface")  # fmt: skip
        return
    present = node.exists(f"/sys/bus/pci/devices/{port.pci}")
    module = (port.driver or "").replace("-", "_")
    loadable = node.execute(["modprobe", "-n", module]).status == 0
    devbind = node.which("dpdk-devbind.py") is not None
    ok = present and loadable and devbind
    detail = f"pci {port.pci}: " + ", ".join(
        [("present" if present else "absent"), (f"{module} loadable" if loadable else
         f"no {module} module"), ("dpdk-devbind.py found" if devbind else "no dpdk-devbind.py")]
    )  # fmt: skip
    doc.add(role, "port", ok, detail, "" if ok else "apt-get install dpdk; check the address")


def _disk(doc: Doctor, nodes: dict[str, Node], path: str) -> None:
    sums = {role: remote_sha256(nodes[role], path) for role in ("host", "backup")}
    same = sums["host"] == sums["backup"]
    mount = nodes["host"].run(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "-T", path], check=False)
    doc.add("host+backup", "guest disk", same, f"{path} on {mount.strip()}: sha256 "
            f"{sums['host'][:12]}" + ("" if same else f" vs {sums['backup'][:12]}"),
            "" if same else "put the image on storage both servers mount")  # fmt: skip


def _migration(doc: Doctor, nodes: dict[str, Node], spec: TestbedSpec, rundir: RunDir) -> None:
    """The backup listens on the migration address and port; the host connects to it."""
    backup, host = nodes["backup"], nodes["host"]
    addr, port = str(spec.migration.backup), spec.migration.port
    listener = backup.process(
        "doctor-listen",
        ["python3", "-c", "import socket,sys; s=socket.socket(); "
         "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
         "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); print('listening', flush=True); "
         "s.settimeout(15); s.accept(); print('accepted', flush=True)", addr, str(port)],
        rundir,
    )  # fmt: skip
    try:
        listener.start()
        listener.expect("listening|Error", 10)
        if "Error" in listener.output.text():
            raise OSError(listener.output.text().strip().splitlines()[-1])
        done = host.execute(["python3", "-c", "import socket,sys; "
                             "socket.create_connection((sys.argv[1], int(sys.argv[2])), 5)",
                             addr, str(port)])  # fmt: skip
        ok = done.status == 0
        doc.add("host->backup", "migration", ok, f"tcp {addr}:{port}" + ("" if ok else
                f": {done.stderr.strip().splitlines()[-1:]}"), "" if ok else
                "check the migration addresses, routes and firewall")  # fmt: skip
    finally:
        listener.stop(timeout=2)


def check_local(qemu: str = QEMU, backend: str = DEFAULT_BACKEND) -> Doctor:
    """The embedded lab's needs on this machine (with `qemu`, that QEMU binary; with
    `backend`, that vhost backend's)."""
    doc = Doctor()
    node = LocalNode("local")
    doc.guarded("local", "programs", doc.programs, "local", node, qemu, TESTPMD_BINARY)
    doc.guarded("local", "backend", doc.backend, "local", node, backend)
    for binary, package in (("ip", "iproute2"), ("tcpdump", "tcpdump"), ("ssh-keygen",
                            "openssh-client"), ("/usr/sbin/sshd", "openssh-server")):  # fmt: skip
        found = node.which(binary) is not None
        doc.add("local", binary.rsplit("/", 1)[-1], found if binary != "/usr/sbin/sshd" else
                (True if found else None), "found" if found else "not found",
                "" if found else f"apt-get install {package}")  # fmt: skip
    free = free_hugepage_mb(node)
    total = node.run(["cat", "/proc/meminfo"])
    mem = int(re.search(r"MemAvailable:\s+(\d+)", total)[1]) // 1024  # type: ignore[index]
    doc.add("local", "memory", mem > 3000, f"{mem} MiB available, {free} MiB hugepages free",
            "" if mem > 3000 else "the lab reserves ~2.6 GiB of hugepages per run")  # fmt: skip
    return doc
