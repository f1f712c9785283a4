"""Driver of one private Open vSwitch (ovsdb-server + ovs-vswitchd) owned by the run.

Never the system's service: its own database file, OVS_RUNDIR, pidfiles and control
sockets in the run's private directory, both daemons in the foreground (no `--detach`)
so the run owns their pids and stops them like every other program. The command lines,
ovs-vsctl arguments and the parsers of what ovs-vsctl and ovs-appctl print are pure
functions here; `OvsSwitch` runs them on a node.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vhostlm.addresses import (
    OVS_APPCTL_BINARY,
    OVS_OFCTL_BINARY,
    OVS_VSCTL_BINARY,
    OVS_VSWITCHD_BINARY,
    OVSDB_SERVER_BINARY,
    OVSDB_TOOL_BINARY,
)
from vhostlm.errors import SetupError
from vhostlm.nodes.base import Node, NodeProcess
from vhostlm.rundir import RunDir

OVS_VSWITCHD_DPDK = OVS_VSWITCHD_BINARY  # Debian's build with DPDK
OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
DPDK_INITIALIZED_RE = r"DPDK Enabled - initialized"
PMD_THREAD_PREFIX = "pmd-c"  # "pmd-c01/id:8": the PMD threads' names
LOG_ARGS = ("-vconsole:info", "-vsyslog:off", "-vfile:off")


@dataclass(frozen=True)
class OvsTools:
    """Where the OVS programs and the schema are on a node."""

    vswitchd: str = OVS_VSWITCHD_BINARY
    ovsdb_server: str = OVSDB_SERVER_BINARY
    ovsdb_tool: str = OVSDB_TOOL_BINARY
    vsctl: str = OVS_VSCTL_BINARY
    appctl: str = OVS_APPCTL_BINARY
    ofctl: str = OVS_OFCTL_BINARY
    schema: str = OVS_SCHEMA

    def programs(self) -> dict[str, str]:
        """Every program an instance runs, by name: what must exist on its node."""
        return {
            "ovs-vswitchd": self.vswitchd, "ovsdb-server": self.ovsdb_server,
            "ovsdb-tool": self.ovsdb_tool, "ovs-vsctl": self.vsctl,
            "ovs-appctl": self.appctl, "ovs-ofctl": self.ofctl,
        }  # fmt: skip


@dataclass(frozen=True)
class OvsFiles:
    """Where one OVS instance keeps its files on its node.

    `private` (0700, the instance's own) has the database, pidfiles and control sockets;
    `rundir` is OVS_RUNDIR, where ovs-vswitchd makes the bridge's `.mgmt`/`.snoop` sockets
    and, for a `dpdkvhostuser` (server mode) port, its vhost-user socket.
    """

    private: str
    rundir: str
    bridge: str

    @property
    def db(self) -> str:
        """The database file."""
        return f"{self.private}/conf.db"

    @property
    def db_sock(self) -> str:
        """ovsdb-server's client socket (`--remote=punix:`)."""
        return f"{self.private}/db.sock"

    @property
    def db_ctl(self) -> str:
        """ovsdb-server's control socket (ovs-appctl -t)."""
        return f"{self.private}/ovsdb-server.ctl"

    @property
    def vswitchd_ctl(self) -> str:
        """ovs-vswitchd's control socket (ovs-appctl -t)."""
        return f"{self.private}/ovs-vswitchd.ctl"

    @property
    def mgmt(self) -> str:
        """The bridge's OpenFlow management socket (ovs-ofctl)."""
        return f"{self.rundir}/{self.bridge}.mgmt"

    def pidfile(self, program: str) -> str:
        """The pidfile of `program`."""
        return f"{self.private}/{program}.pid"

    def env(self) -> dict[str, str]:
        """The environment of both daemons: nothing of theirs under /var/run/openvswitch."""
        return {"OVS_RUNDIR": self.rundir, "OVS_DBDIR": self.private, "OVS_LOGDIR": self.private}


def ovsdb_server_argv(tools: OvsTools, files: OvsFiles) -> list[str]:
    """ovsdb-server on the private database, in the foreground."""
    return [
        tools.ovsdb_server,
        files.db,
        f"--remote=punix:{files.db_sock}",
        f"--unixctl={files.db_ctl}",
        f"--pidfile={files.pidfile('ovsdb-server')}",
        "--no-chdir",
        *LOG_ARGS,
    ]


def vswitchd_argv(tools: OvsTools, files: OvsFiles) -> list[str]:
    """ovs-vswitchd on the private database, in the foreground; no `--mlockall`: a
    postcopy destination must not pre-fault guest memory (OVS refuses the combination)."""
    return [
        tools.vswitchd,
        f"unix:{files.db_sock}",
        f"--unixctl={files.vswitchd_ctl}",
        f"--pidfile={files.pidfile('ovs-vswitchd')}",
        "--no-chdir",
        *LOG_ARGS,
    ]


OVS_VERSION_RE = re.compile(r"\(Open vSwitch\) (\d+)\.(\d+)(?:\.\d+)?")
OVS_DPDK_RE = re.compile(r"^DPDK (\d+\.\d+\S*)", re.M)
VHOST_CLIENT_OVS = (2, 6)  # dpdkvhostuserclient ports (QEMU the vhost-user server)


@dataclass(frozen=True)
class OvsVersion:
    """What `ovs-vswitchd --version` says: its version and the DPDK it was built with."""

    version: tuple[int, int] | None
    dpdk: str | None  # None: built without DPDK (the plain ovs-vswitchd)
    line: str  # its first line, for a reader


def parse_ovs_version(text: str) -> OvsVersion:
    """`ovs-vswitchd-dpdk --version`: "ovs-vswitchd-dpdk (Open vSwitch) 3.1.0" then, when
    built with DPDK, "DPDK 22.11.11"."""
    found, dpdk = OVS_VERSION_RE.search(text), OVS_DPDK_RE.search(text)
    lines = text.strip().splitlines()
    return OvsVersion(
        (int(found[1]), int(found[2])) if found else None,
        dpdk[1] if dpdk else None,
        lines[0] if lines else "",
    )


def ovsdb_value(value: str) -> str:
    """`value` as an OVSDB string atom for ovs-vsctl: JSON-quoted, so commas, spaces and
    equals signs (dpdk-extra, dpdk-devargs) reach the database as they are."""
    return json.dumps(value)


def map_args(column: str, pairs: Mapping[str, str | int]) -> list[str]:
    """`column:key="value"` arguments of ovs-vsctl `set`, one per pair."""
    return [f"{column}:{key}={ovsdb_value(str(value))}" for key, value in pairs.items()]


def vsctl_argv(
    tools: OvsTools, files: OvsFiles, args: Sequence[str], timeout: float, wait: bool = True
) -> list[str]:
    """ovs-vsctl on the private database. With `wait` it returns only once ovs-vswitchd
    applied the change (its cur_cfg caught up): the event, not a sleep; or fails after
    `timeout` s. Before ovs-vswitchd runs, `wait=False`."""
    head = [tools.vsctl, f"--db=unix:{files.db_sock}", f"--timeout={max(1, round(timeout))}"]
    return [*head, *([] if wait else ["--no-wait"]), *args]


OVS_MAP_RE = re.compile(r'"?([\w.:-]+)"?\s*=\s*"?(-?\d+)"?')


def parse_ovsdb_map(text: str) -> dict[str, int]:
    """An integer map column as `ovs-vsctl get` prints it (`{rx_bytes=0, tx_packets=3}`)."""
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise ValueError(f"not an OVSDB map: {body[:200]!r}")
    return {key: int(value) for key, value in OVS_MAP_RE.findall(body)}


@dataclass(frozen=True)
class InterfaceState:
    """An Interface row as ovs-vswitchd left it: its OpenFlow port (-1: failed) and error."""

    name: str
    ofport: int
    error: str | None


def _atom(value: object) -> object:
    """An OVSDB JSON datum's value: `["set", []]` is empty, `["set", [x]]` is x."""
    if isinstance(value, list) and len(value) == 2 and value[0] == "set":
        items = value[1]
        return items[0] if isinstance(items, list) and len(items) == 1 else None
    return value


def parse_interfaces(text: str) -> dict[str, InterfaceState]:
    """`ovs-vsctl -f json --columns=name,ofport,error list Interface`, by name."""
    table = json.loads(text)
    heads = table["headings"]
    rows: dict[str, InterfaceState] = {}
    for row in table["data"]:
        cols = {h: _atom(v) for h, v in zip(heads, row, strict=True)}
        ofport, error = cols.get("ofport"), cols.get("error")
        name = str(cols["name"])
        rows[name] = InterfaceState(
            name, ofport if isinstance(ofport, int) else -1, str(error) if error else None
        )
    return rows


@dataclass(frozen=True)
class DpStats:
    """One datapath port's counters from `ovs-appctl dpctl/show -s` (read live, unlike the
    Interface table's `statistics`, which ovs-vswitchd refreshes every 5 s)."""

    name: str
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int
    rx_bytes: int
    tx_bytes: int


# not anchored to a line's start: after a port whose counters it cannot read, dpctl writes
# ", could not retrieve stats (Protocol error)" and the next port on the same line
DP_PORT_RE = re.compile(r"\bport (\d+): (\S+)")
DP_NO_STATS = "could not retrieve stats"
DP_RX_RE = re.compile(r"RX packets:(\S+) errors:(\S+) dropped:(\S+)")
DP_TX_RE = re.compile(r"TX packets:(\S+) errors:(\S+) dropped:(\S+)")
DP_BYTES_RE = re.compile(r"RX bytes:(\S+).*?TX bytes:(\S+)")


def _count(word: str) -> int:
    """A counter dpctl printed; `?` (the port has no such counter) is 0."""
    return int(word) if word.isdigit() else 0


def parse_dpctl_stats(text: str) -> dict[str, DpStats]:
    """Every port's counters in `ovs-appctl dpctl/show -s`, by port name; a port whose
    counters OVS could not read (a vhost port no guest is connected to) is left out."""
    starts = list(DP_PORT_RE.finditer(text))
    ports: dict[str, DpStats] = {}
    for i, head in enumerate(starts):
        block = text[head.end() : starts[i + 1].start() if i + 1 < len(starts) else len(text)]
        rx, tx, by = DP_RX_RE.search(block), DP_TX_RE.search(block), DP_BYTES_RE.search(block)
        if DP_NO_STATS in block or rx is None or tx is None or by is None:
            continue  # a vhost port with no guest now (EPROTO), or `dpctl/show` without -s
        ports[head[2]] = DpStats(
            name=head[2],
            rx_packets=_count(rx[1]),
            rx_errors=_count(rx[2]),
            rx_dropped=_count(rx[3]),
            tx_packets=_count(tx[1]),
            tx_errors=_count(tx[2]),
            tx_dropped=_count(tx[3]),
            rx_bytes=_count(by[1]),
            tx_bytes=_count(by[2]),
        )
    return ports


def thread_ids(ps_output: str, prefix: str) -> list[str]:
    """Thread ids in `ps -L -o tid=,comm=` output whose name starts with `prefix`."""
    return [
        parts[0]
        for parts in (line.split() for line in ps_output.splitlines())
        if len(parts) > 1 and parts[1].startswith(prefix)
    ]


class OvsSwitch:
    """ovsdb-server and ovs-vswitchd of one instance on one node; stopped by `stop`."""

    def __init__(
        self, name: str, node: Node, rundir: RunDir, files: OvsFiles, tools: OvsTools
    ) -> None:
        self.name = name
        self.node = node
        self.files = files
        self.tools = tools
        env = files.env()
        self.db = node.process(f"{name}-ovsdb", ovsdb_server_argv(tools, files), rundir, env)
        self.vswitchd = node.process(name, vswitchd_argv(tools, files), rundir, env)
        self._db_started = self._vswitchd_started = False

    # -- commands -------------------------------------------------------------------------

    def vsctl(self, *args: str, timeout: float = 30.0, wait: bool = True) -> str:
        """ovs-vsctl on this instance's database; SetupError with its words if it fails."""
        argv = vsctl_argv(self.tools, self.files, args, timeout, wait)
        return self.node.run(argv, timeout=timeout + 10)

    def appctl(self, *args: str, target: str | None = None, timeout: float = 10.0) -> str:
        """ovs-appctl to ovs-vswitchd (or the control socket `target`)."""
        ctl = target or self.files.vswitchd_ctl
        argv = [self.tools.appctl, "-t", ctl, f"--timeout={max(1, round(timeout))}", *args]
        return self.node.run(argv, timeout=timeout + 10)

    def ofctl(self, *args: str) -> str:
        """ovs-ofctl on the bridge's management socket."""
        return self.node.run([self.tools.ofctl, args[0], f"unix:{self.files.mgmt}", *args[1:]])

    # -- life -----------------------------------------------------------------------------

    def create_db(self) -> None:
        """A fresh private database from the schema (any old one of this name removed)."""
        self.node.run(["mkdir", "-p", "-m", "0700", self.files.private])
        self.node.run(["rm", "-f", self.files.db])
        self.node.run([self.tools.ovsdb_tool, "create", self.files.db, self.tools.schema])

    def start_db(self, timeout: float = 20.0) -> None:
        """Start ovsdb-server; return once it answers (`ovs-vsctl --retry init`, which also
        makes the Open_vSwitch row)."""
        self.db.start()
        self._db_started = True
        try:
            self.vsctl("--retry", "init", timeout=timeout, wait=False)
        except SetupError as exc:
            raise SetupError(f"{exc}; ovsdb-server said: {self._tail(self.db)}") from exc

    def configure(self, other_config: Mapping[str, str | int]) -> None:
        """Set Open_vSwitch other_config (before ovs-vswitchd starts: dpdk-init and the
        vhost options are read once, at DPDK's initialisation)."""
        self.vsctl("set", "Open_vSwitch", ".", *map_args("other_config", other_config),
                   wait=False)  # fmt: skip

    def start_vswitchd(self, timeout: float = 60.0) -> None:
        """Start ovs-vswitchd and wait for its "DPDK Enabled - initialized"; when DPDK
        cannot initialise it exits, and its last words are in the SetupError."""
        self.vswitchd.start()
        self._vswitchd_started = True
        self.vswitchd.expect(DPDK_INITIALIZED_RE, timeout)

    def interfaces(self) -> dict[str, InterfaceState]:
        """Every Interface row's ofport and error."""
        out = self.vsctl("-f", "json", "--columns=name,ofport,error", "list", "Interface")
        return parse_interfaces(out)

    def dp_stats(self) -> dict[str, DpStats]:
        """Live counters of every datapath port."""
        return parse_dpctl_stats(self.appctl("dpctl/show", "-s"))

    def statistics(self, interface: str) -> dict[str, int]:
        """The Interface row's `statistics` column (refreshed by ovs-vswitchd every 5 s)."""
        return parse_ovsdb_map(self.vsctl("get", "Interface", interface, "statistics"))

    def pmd_threads_nice(self, nice: int) -> int:
        """Set the nice value of the PMD threads; how many were changed."""
        tasks = self.node.run(["ps", "-L", "-o", "tid=,comm=", "-p", str(self.vswitchd.pid)])
        tids = thread_ids(tasks, PMD_THREAD_PREFIX)
        if tids:
            self.node.run(["renice", "-n", str(nice), "-p", *tids])
        return len(tids)

    def stop(self) -> None:
        """ovs-vswitchd `exit --cleanup` (its datapath ports removed), then ovsdb-server
        `exit`; each then by signal through its process. Safe to call twice."""
        for started, process, ctl, args in (
            (self._vswitchd_started, self.vswitchd, self.files.vswitchd_ctl, ("exit", "--cleanup")),
            (self._db_started, self.db, self.files.db_ctl, ("exit",)),
        ):
            if started:
                self._exit(process, ctl, args)
        self._vswitchd_started = self._db_started = False

    def _exit(self, process: NodeProcess, ctl: str, args: Sequence[str]) -> None:
        """`ovs-appctl -t CTL ARGS` (exit), then by signal through its process."""
        if process.alive():
            argv = [self.tools.appctl, "-t", ctl, "--timeout=5", *args]
            with contextlib.suppress(SetupError):  # it may hang; the signal follows
                self.node.execute(argv, timeout=10)
            process.wait(5)
        process.stop()

    def stop_vswitchd(self) -> None:
        """ovs-vswitchd alone, as a restart of the service stops it: `exit` without
        `--cleanup`, so nothing is deleted from the database; ovsdb-server keeps running."""
        if self._vswitchd_started:
            self._exit(self.vswitchd, self.files.vswitchd_ctl, ("exit",))
        self._vswitchd_started = False

    def restart_vswitchd(self, name: str, generation: int, timeout: float = 60.0) -> None:
        """A new ovs-vswitchd (`name` in the logs) on the same database, after
        `stop_vswitchd`: up to DPDK's initialisation, then until it has built the
        database's bridge and ports. That wait is an ovs-vsctl transaction (a new
        external_ids value, `generation`) returning once ovs-vswitchd's cur_cfg caught up:
        its first reconfiguration came before it."""
        env = self.files.env()
        self.vswitchd = self.node.process(name, vswitchd_argv(self.tools, self.files),
                                          self.vswitchd.rundir, env)  # fmt: skip
        self.start_vswitchd(timeout)
        self.vsctl("set", "Open_vSwitch", ".", f"external_ids:vhostlm-restarts={generation}",
                   timeout=timeout)  # fmt: skip

    @staticmethod
    def _tail(process: NodeProcess) -> str:
        lines = process.output.text().strip().splitlines()
        return " | ".join(lines[-3:]) if lines else "nothing"
