"""The embedded lab: host, backup, tester and switch as network namespaces on one machine.

```
 ns tester --veth-- [ns switch: bridge br0] --veth-- ns host   (eth0)
                                            --veth-- ns backup (eth0)
 ns host (mig0 198.18.0.1) --veth-- (mig0 198.18.0.2) ns backup
```
Every name carries the run id, so two runs never collide; what is created is recorded in
the run's runtime directory first, so teardown also works after a crash.
"""

from __future__ import annotations

import json
from pathlib import Path

from vhostlm.addresses import MIG_IPS, PREFIX_LEN, QEMU_BINARY, TESTER_IP
from vhostlm.errors import SetupError
from vhostlm.nodes.base import Node
from vhostlm.nodes.local import LocalNode
from vhostlm.nodes.sockets import check_socket_free
from vhostlm.rundir import RunDir
from vhostlm.testbed import hugepages
from vhostlm.testbed.shell import run
from vhostlm.testbed.topology import ROLES, Nic, Tools, Topology

NS_PREFIX = "vhostlm-"


class Lab(Topology):
    """One run's namespaces, links, hugetlbfs mount and hugepage reservation."""

    def __init__(self, rundir: RunDir, qemu: str = QEMU_BINARY) -> None:
        self.rundir = rundir
        self.qemu = qemu
        self.run_id = rundir.run_id
        self.hugepath = rundir.runtime / "huge"
        self._state_path = rundir.runtime / "lab.json"
        self.state: dict[str, object] = {"run_id": self.run_id, "netns": [], "added_pages": 0}
        self.image: tuple[str, str] = ("", "")  # set by the runner once the image is built

    def node(self, role: str) -> Node:
        """The namespace of `role` as a local node."""
        return LocalNode(role, self.ns(role))

    def nic(self, role: str) -> Nic:
        """The role's veth to the switch, used through af_packet."""
        return Nic(interface=self.port(role))

    def tools(self, role: str) -> Tools:
        """The programs on PATH, with the run's QEMU (--qemu)."""
        return Tools(qemu=self.qemu)

    def hugedir(self, role: str) -> str:
        """The run's own hugetlbfs mount, shared by every role."""
        return str(self.hugepath)

    def workdir(self, role: str) -> str:
        """The run's socket directory for host and backup (they share this machine's
        filesystem); the tester's files (its script, its probe data) go beside it."""
        if role != "tester":
            return str(self.rundir.sockets)
        files = self.rundir.runtime / "tester"
        files.mkdir(mode=0o700, exist_ok=True)
        return str(files)

    def guest_files(self, role: str) -> tuple[str, str]:
        """The cached image, used in place."""
        return self.image

    def claim_socket(self, role: str, path: str) -> None:
        """A program of another run may listen on it (UsageError); a stale file is removed."""
        check_socket_free(Path(path))

    def secure_sockets(self, role: str, local: Path) -> None:
        """The nodes share this machine's socket directory: secure it once."""
        self.node(role).secure_sockets(self.workdir(role))

    def stage_dir(self, role: str, local: Path) -> str:
        """The namespaces see this machine's files: nothing to copy."""
        return str(local)

    def sniff_points(self) -> dict[str, tuple[Node, str]]:
        """The host's and backup's ports on the switch."""
        switch = LocalNode("switch", self.ns("switch"))
        return {role: (switch, f"p-{role}") for role in ("host", "backup")}

    def ns(self, role: str) -> str:
        """Name of the namespace playing `role` (host, backup, tester, switch)."""
        return f"{NS_PREFIX}{self.run_id}-{role}"

    @staticmethod
    def port(role: str) -> str:
        """The role's switch-facing interface (the 'physical port' of the seed)."""
        return "eth0"

    def migration_ip(self, role: str) -> str:
        """Address of the role on the host-backup migration link."""
        return MIG_IPS[role]

    def _save(self) -> None:
        self._state_path.write_text(json.dumps(self.state, indent=1))

    def _add_ns(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        netns = self.state["netns"]
        assert isinstance(netns, list)
        netns.append(name)
        self._save()
        self.rundir.record("netns", name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        for key in ("all", "default"):
            run(
                [
                    "ip",
                    "netns",
                    "exec",
                    name,
                    "sysctl",
                    "-qw",
                    f"net.ipv6.conf.{key}.disable_ipv6=1",
                ]
            )

    def _veth(self, a_ns: str, a_if: str, b_ns: str, b_if: str) -> None:
        run(["ip", "link", "add", a_if, "netns", a_ns, "type", "veth",
             "peer", "name", b_if, "netns", b_ns])  # fmt: skip
        for ns, ifname in ((a_ns, a_if), (b_ns, b_if)):
            run(["ip", "-n", ns, "link", "set", ifname, "up"])

    def up(self, pages: int, learning: bool = False) -> Lab:
        """Create the topology and reserve `pages` hugepages; undo it all on failure.

        With `learning` off (the default) the switch floods the guest's frames to both
        host and backup ports; on, it behaves like a learning switch, so the guest is only
        reached on the backup after something announced it there.
        """
        try:
            self._save()
            self.state["added_pages"] = hugepages.reserve(pages, self.run_id)
            self._save()
            self.hugepath.mkdir(exist_ok=True)
            run(
                [
                    "mount",
                    "-t",
                    "hugetlbfs",
                    "-o",
                    "pagesize=2M,mode=0700",
                    "hugetlbfs",
                    str(self.hugepath),
                ]
            )
            self.state["mount"] = str(self.hugepath)
            self._save()
            switch = self.ns("switch")
            for role in (*ROLES, "switch"):
                self._add_ns(self.ns(role))
            run(["ip", "-n", switch, "link", "add", "br0", "type", "bridge"])
            run(["ip", "-n", switch, "link", "set", "br0", "up"])
            for role in ROLES:
                self._veth(self.ns(role), self.port(role), switch, f"p-{role}")
                run(["ip", "-n", switch, "link", "set", f"p-{role}", "master", "br0"])
                if role != "tester" and not learning:
                    # The seed's switch delivers the tester's frames to host and backup alike.
                    run(["bridge", "-n", switch, "link", "set", "dev", f"p-{role}",
                         "learning", "off"])  # fmt: skip
                run(["ip", "-n", self.ns(role), "link", "set", self.port(role), "promisc", "on"])
            tester_ip = f"{TESTER_IP}/{PREFIX_LEN}"
            run(["ip", "-n", self.ns("tester"), "addr", "add", tester_ip, "dev", "eth0"])
            self._veth(self.ns("host"), "mig0", self.ns("backup"), "mig0")
            for role in ("host", "backup"):
                run(
                    [
                        "ip",
                        "-n",
                        self.ns(role),
                        "addr",
                        "add",
                        f"{self.migration_ip(role)}/{PREFIX_LEN}",
                        "dev",
                        "mig0",
                    ]
                )
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> list[str]:
        """Remove everything `up` created; return problems (empty when all went)."""
        return teardown_lab(self._state_path)

    def status(self) -> dict[str, object]:
        """What exists now of this lab."""
        existing = set(list_namespaces())
        return {
            "run_id": self.run_id,
            "netns": {ns: ns in existing for ns in (self.ns(r) for r in (*ROLES, "switch"))},
            "hugepages_added": self.state.get("added_pages", 0),
        }


def list_namespaces() -> list[str]:
    """Names of the network namespaces that exist."""
    out = run(["ip", "-j", "netns", "list"], check=False).strip()
    return [str(item["name"]) for item in json.loads(out)] if out else []


def teardown_lab(state_path: Path) -> list[str]:
    """Undo a lab from its state file: namespaces, mount, hugepages. Idempotent."""
    problems: list[str] = []
    if not state_path.exists():
        return problems
    state = json.loads(state_path.read_text())
    existing = set(list_namespaces())
    for name in reversed(state.get("netns", [])):
        if name in existing:
            try:
                run(["ip", "netns", "delete", name])
            except SetupError as exc:
                problems.append(str(exc))
    mount = state.get("mount")
    if mount and Path(mount).is_mount():
        try:
            run(["umount", mount])
        except SetupError as exc:
            problems.append(str(exc))
    hugepages.release(str(state.get("run_id") or state_path.parent.name))
    state["added_pages"] = 0
    state["netns"] = []
    state.pop("mount", None)
    state_path.write_text(json.dumps(state, indent=1))
    return problems
