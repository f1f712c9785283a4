"""A testbed of real servers from a testbed file: connect, check, bind, copy; undo it all.

Each node gets a private run directory under its `workdir`; the guest image is copied to
host and backup and checked by checksum; PCI ports are bound for the run and given back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vhostlm.errors import SetupError, UsageError
from vhostlm.image.cache import GuestImage
from vhostlm.image.host import sha256_file
from vhostlm.nodes.base import Node
from vhostlm.nodes.local import LocalNode
from vhostlm.nodes.ssh import SshNode
from vhostlm.rundir import RunDir
from vhostlm.testbed import devbind
from vhostlm.testbed.model import NodeSpec, TestbedSpec, load_testbed
from vhostlm.testbed.topology import ROLES, Nic, Tools, Topology

SOCKET_MAX = 107  # sun_path is 108 bytes with its terminating NUL


def make_node(role: str, spec: NodeSpec, rundir: RunDir | None) -> Node:
    """The node object a node's spec describes (SSH, or local in an optional namespace)."""
    if spec.ssh is None:
        return LocalNode(role, spec.netns)
    ssh = spec.ssh
    node = SshNode(role, ssh.address, ssh.user, ssh.key, ssh.port, ssh.known_hosts, ssh.sudo)
    node.local_sockets = rundir.sockets if rundir is not None else None
    return node


def remote_sha256(node: Node, path: str) -> str:
    """Hex SHA-256 of a file on `node`."""
    return node.run(["sha256sum", path], timeout=300).split()[0]


def free_hugepage_mb(node: Node) -> int:
    """Free hugepage memory on `node` in MiB, from /proc/meminfo."""
    info = dict(
        (line.split(":")[0], line.split(":")[1].split()[0])
        for line in node.run(["cat", "/proc/meminfo"]).splitlines()
        if ":" in line and line.split(":")[1].split()
    )
    return int(info.get("HugePages_Free", 0)) * int(info.get("Hugepagesize", 0)) // 1024


class RemoteBed(Topology):
    """Host, backup and tester from a testbed file, reached through their `Node`s."""

    def __init__(self, spec: TestbedSpec, source: str, rundir: RunDir) -> None:
        self.spec = spec
        self.source = source
        self.rundir = rundir
        self.migration_port = spec.migration.port
        self.nodes = {role: make_node(role, self._spec(role), rundir) for role in ROLES}
        self._workdirs = {r: f"{self._spec(r).workdir}/vhostlm-{rundir.run_id}" for r in ROLES}
        self._image: dict[str, tuple[str, str]] = {}
        self.bindings: list[devbind.Binding] = []
        self._made: list[tuple[Node, str]] = []
        self._ready: set[str] = set()  # roles reached, with a run directory
        self.facts: dict[str, str] = {}  # what the run found out, for results.json
        rundir.record("testbed", str(Path(source).resolve()))  # for `lab down` after a crash

    def _spec(self, role: str) -> NodeSpec:
        spec: NodeSpec = getattr(self.spec.nodes, role)
        return spec

    # Topology ------------------------------------------------------------------------
    def node(self, role: str) -> Node:
        """The node playing `role`."""
        return self.nodes[role]

    def nic(self, role: str) -> Nic:
        """The port from the testbed file."""
        port = self._spec(role).port
        return Nic(interface=port.interface, pci=port.pci, driver=port.driver)

    def hugedir(self, role: str) -> str:
        """The node's hugetlbfs mount."""
        return self._spec(role).hugepages.mount

    def migration_ip(self, role: str) -> str:
        """host or backup address on the migration network."""
        return str(getattr(self.spec.migration, role))

    def workdir(self, role: str) -> str:
        """This run's directory on the node."""
        return self._workdirs[role]

    def guest_files(self, role: str) -> tuple[str, str]:
        """The copied kernel and initramfs on host or backup."""
        return self._image[role]

    def sniff_points(self) -> dict[str, tuple[Node, str]]:
        """No switch to tap on real hardware: the tester sees the broadcast announcements."""
        iface = self._spec("tester").port.interface or ""
        return {role: (self.nodes["tester"], iface) for role in ("host", "backup")}

    def guest_disk(self) -> str | None:
        """The testbed file's shared disk image."""
        return self.spec.guest.disk

    def overlay_dir(self, image: str) -> str | None:
        """Beside the image: the storage host and backup both see (checked like the disk)."""
        return str(Path(image).parent)

    def tools(self, role: str) -> Tools:
        """Programs as named in the testbed file."""
        spec = self._spec(role)
        return Tools(qemu=spec.qemu, testpmd=spec.testpmd, python=spec.python)

    # set-up and teardown -------------------------------------------------------------
    def reach(self) -> RemoteBed:
        """Connect to every node and check its programs: the usage errors, before any set-up."""
        try:
            for role in ROLES:
                node = self.nodes[role]
                if isinstance(node, SshNode):
                    node.connect()
                self._check_tools(role)
        except BaseException:
            self.down()
            raise
        return self

    def up(self, image: GuestImage, hugepage_mb: int) -> RemoteBed:
        """Check hugepages, bind ports, copy the guest (after `reach`); undo on failure."""
        try:
            for role in ROLES:
                self._make_workdir(role)
            for role in ("host", "backup"):
                self._check_hugepages(role, hugepage_mb)
                nic = self.nic(role)
                if nic.pci and nic.driver:
                    binding = devbind.bind(self.nodes[role], nic.pci, nic.driver)
                    self.bindings.append(binding)
                    self.rundir.record("bound_ports", [role, nic.pci, binding.original])
                self._copy_image(role, image)
            if self.spec.guest.disk:
                disk = self._check_disk(self.spec.guest.disk)
                self.facts.update({f"guest_disk_{key}": value for key, value in disk.items()})
            if self.spec.guest.image:  # shared like the disk: the overlay goes beside it
                found = self._check_disk(self.spec.guest.image)
                self.facts.update({f"guest_image_{k}": v for k, v in found.items() if k != "path"})
        except BaseException:
            self.down()
            raise
        return self

    def _check_tools(self, role: str) -> None:
        spec = self._spec(role)
        wanted = {"tester": [("python", spec.python), ("tcpdump", "tcpdump")]}.get(
            role, [("qemu", spec.qemu), ("testpmd", spec.testpmd)]
        )
        for field, binary in wanted:
            if self.nodes[role].which(binary) is None:
                raise UsageError(
                    f"node {role}: {binary} not found on {self.nodes[role].label}: install it "
                    f"or set nodes.{role}.{field} in {self.source}"
                )

    def _make_workdir(self, role: str) -> None:
        node, path = self.nodes[role], self._workdirs[role]
        longest = f"{path}/{'x' * 60}"
        if len(longest) > SOCKET_MAX:
            raise UsageError(
                f"{self.source}: nodes.{role}.workdir is too long for unix sockets: use a "
                "shorter path (at most about 30 characters)"
            )
        node.run(["mkdir", "-p", "-m", "0700", path])
        self._made.append((node, path))
        self._ready.add(role)
        self.rundir.record("remote_dirs", [role, path])

    def _check_hugepages(self, role: str, need_mb: int) -> None:
        node, mount = self.nodes[role], self.hugedir(role)
        fstype = node.execute(["findmnt", "-n", "-o", "FSTYPE", "-T", mount]).stdout.strip()
        if fstype != "hugetlbfs":
            raise UsageError(
                f"node {role}: {mount} is not a hugetlbfs mount on {node.label}: mount one "
                f"or set nodes.{role}.hugepages.mount"
            )
        free = free_hugepage_mb(node)
        if free < need_mb:
            raise UsageError(
                f"node {role}: {free} MiB of hugepages free on {node.label}, {need_mb} MiB "
                "needed: reserve more (echo N > /proc/sys/vm/nr_hugepages)"
            )

    def _copy_image(self, role: str, image: GuestImage) -> None:
        node, files = self.nodes[role], []
        for local in (image.kernel, image.initrd):
            remote = f"{self._workdirs[role]}/{local.name}"
            node.put(local, remote)
            if remote_sha256(node, remote) != sha256_file(local):
                raise SetupError(f"{node.label}: the copy of {local.name} differs (checksum)")
            files.append(remote)
        self._image[role] = (files[0], files[1])

    def _check_disk(self, path: str) -> dict[str, str]:
        """Host and backup must see the same disk image (the seed's NFS share)."""
        sums, mounts = {}, {}
        for role in ("host", "backup"):
            node = self.nodes[role]
            if not node.exists(path):
                raise UsageError(f"node {role}: guest disk {path} not found on {node.label}")
            sums[role] = remote_sha256(node, path)
            mounts[role] = node.run(
                ["findmnt", "-n", "-o", "SOURCE,FSTYPE", "-T", path], check=False
            ).strip()
        if sums["host"] != sums["backup"]:
            raise UsageError(
                f"guest disk {path} differs between host and backup (sha256 "
                f"{sums['host'][:12]} vs {sums['backup'][:12]}): put it on storage both share"
            )
        return {
            "path": path,
            "sha256": sums["host"],
            **{f"mount_{r}": m for r, m in mounts.items()},
        }

    def down(self) -> list[str]:
        """Restore ports, remove run directories and hugepage files, disconnect."""
        problems: list[str] = []
        for binding in reversed(self.bindings):
            try:
                devbind.restore(binding)
                entry = [binding.node.name, binding.pci, binding.original]
                self.rundir.forget("bound_ports", entry)
            except SetupError as exc:
                problems.append(str(exc))
        self.bindings.clear()
        for node, path in reversed(self._made):
            try:
                node.run(["rm", "-rf", "--one-file-system", path])
                self.rundir.forget("remote_dirs", [node.name, path])
            except SetupError as exc:
                problems.append(str(exc))
        self._made.clear()
        for role in sorted(self._ready & {"host", "backup"}):
            try:  # testpmd's hugepage files of a crashed instance
                self.nodes[role].run(["find", self.hugedir(role), "-maxdepth", "1", "-name",
                                      f"vhostlm-{self.rundir.run_id}-*", "-delete"])  # fmt: skip
            except SetupError as exc:
                problems.append(str(exc))
        self._ready.clear()
        for node in self.nodes.values():
            node.close()
        return problems


def recover_remote(resources: dict[str, Any], run_id: str) -> list[str]:
    """Undo what a crashed run left on its testbed's nodes, from its records alone:
    its processes (checked by their VHOSTLM_RUN mark), run directories and bound ports."""
    pids, dirs, ports = (resources.get(k) or [] for k in ("remote_pids", "remote_dirs",
                                                           "bound_ports"))  # fmt: skip
    if not (pids or dirs or ports) or not resources.get("testbed"):
        return []
    try:
        spec = load_testbed(Path(resources["testbed"][-1]))  # records are lists
    except UsageError as exc:
        return [f"cannot clean the testbed of run {run_id}: {exc}"]
    nodes: dict[str, Node] = {}
    problems: list[str] = []

    def node(role: str) -> Node:
        if role not in nodes:
            nodes[role] = make_node(role, getattr(spec.nodes, role), None)
        return nodes[role]

    try:
        for role, pid in pids:
            mark = f"VHOSTLM_RUN={run_id}"
            if node(role).execute(["grep", "-qz", mark, f"/proc/{pid}/environ"]).status == 0:
                node(role).execute(["kill", "-9", str(pid)])
        for role, pci, original in ports:
            wanted = getattr(spec.nodes, role).port.driver or ""
            devbind.restore(devbind.Binding(node(role), pci, wanted, original))
        for role, path in dirs:
            node(role).run(["rm", "-rf", "--one-file-system", path])
    except (SetupError, UsageError) as exc:
        problems.append(f"run {run_id}: {exc}")
    finally:
        for each in nodes.values():
            each.close()
    return problems
