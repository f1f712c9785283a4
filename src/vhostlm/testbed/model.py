"""The testbed file: three servers (or local namespaces) as typed, validated models.

```yaml
nodes:
  host:
    ssh: {address: 192.0.2.10, user: root, key: ~/.ssh/id_ed25519}
    port: {pci: "0000:3b:00.0", driver: vfio-pci}
    hugepages: {mount: /dev/hugepages}
  backup: {...}
  tester:
    ssh: {address: 192.0.2.12}
    port: {interface: ens1f0}
migration: {host: 198.18.0.1, backup: 198.18.0.2, port: 4444}
guest: {accel: auto}
```
Every error names the file, the field and what would fix it, in one line.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from vhostlm.addresses import MIG_PORT, QEMU_BINARY, TESTPMD_BINARY
from vhostlm.errors import UsageError

PCI_RE = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
IFACE_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
DRIVERS = ("vfio-pci", "igb_uio", "uio_pci_generic")


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute path")
    return value.rstrip("/") or "/"


AbsolutePath = Annotated[str, AfterValidator(_absolute)]


class Strict(BaseModel):
    """Unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _file(value: Path | None, info: ValidationInfo, what: str) -> Path | None:
    """Resolve a path relative to the testbed file and check it can be read."""
    if value is None:
        return None
    path = value.expanduser()
    base = (info.context or {}).get("base")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist: give the path of an existing file")
    try:
        path.open("rb").close()
    except OSError as exc:
        raise ValueError(f"{what} {path} cannot be read ({exc.strerror})") from exc
    return path


class SshSpec(Strict):
    """How to reach a node over SSH."""

    address: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    user: str = Field(default="root", min_length=1)
    key: Path | None = None
    known_hosts: Path | None = None
    sudo: bool = False

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9.:_-]+$", value):
            raise ValueError(f"{value!r} is not a host name or IP address")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _file(value, info, "SSH key")

    @field_validator("known_hosts")
    @classmethod
    def _known_hosts(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _file(value, info, "known_hosts file")


class PortSpec(Strict):
    """A node's port on the switch: a PCI device bound to a DPDK driver, or an interface."""

    pci: str | None = None
    driver: Literal["vfio-pci", "igb_uio", "uio_pci_generic"] | None = None
    interface: str | None = None

    @field_validator("pci")
    @classmethod
    def _pci(cls, value: str | None) -> str | None:
        if value is not None and not PCI_RE.match(value):
            raise ValueError(f"{value!r} is not a PCI address like 0000:3b:00.0")
        return value.lower() if value else value

    @field_validator("interface")
    @classmethod
    def _iface(cls, value: str | None) -> str | None:
        if value is not None and not IFACE_RE.match(value):
            raise ValueError(f"{value!r} is not an interface name (1-15 letters, digits, .-_)")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> PortSpec:
        if (self.pci is None) == (self.interface is None):
            raise ValueError("give either pci (with driver) or interface, not both or neither")
        if self.pci is not None and self.driver is None:
            raise ValueError(f"pci {self.pci} needs a driver: one of {', '.join(DRIVERS)}")
        if self.interface is not None and self.driver is not None:
            raise ValueError("driver applies to a pci port only: drop it for an interface")
        return self


class HugepageSpec(Strict):
    """The hugetlbfs mount the node's guests and testpmd use (checked, not reserved)."""

    mount: AbsolutePath = "/dev/hugepages"


class NodeSpec(Strict):
    """One machine: how to reach it, its port, hugepages, programs and work directory."""

    ssh: SshSpec | None = None
    local: bool = False
    netns: str | None = None  # with local: run inside this network namespace
    port: PortSpec
    hugepages: HugepageSpec = HugepageSpec()
    qemu: str = Field(default=QEMU_BINARY, min_length=1)
    testpmd: str = Field(default=TESTPMD_BINARY, min_length=1)
    python: str = Field(default="python3", min_length=1)
    workdir: AbsolutePath = "/var/tmp/vhostlm"

    @model_validator(mode="after")
    def _reach(self) -> NodeSpec:
        if (self.ssh is None) == (not self.local):
            raise ValueError("say how to reach the node: either ssh: {address: ...} or local: true")
        if self.netns is not None and not self.local:
            raise ValueError("netns applies to a local node only")
        return self


class Nodes(Strict):
    """The seed's three machines."""

    host: NodeSpec
    backup: NodeSpec
    tester: NodeSpec

    @model_validator(mode="after")
    def _tester_iface(self) -> Nodes:
        if self.tester.port.interface is None:
            raise ValueError("tester.port must be an interface: scapy sends through the kernel")
        return self


class MigrationSpec(Strict):
    """The host-backup migration network."""

    host: IPv4Address
    backup: IPv4Address
    port: int = Field(default=MIG_PORT, ge=1, le=65535)


class GuestSpec(Strict):
    """The guest: vhostlm's initramfs is copied to host and backup; `disk` on shared storage."""

    accel: Literal["auto", "kvm", "tcg"] = "auto"
    disk: str | None = None  # a disk image on storage both see (the seed's NFS), checksummed
    # the user's guest, booted instead of the initramfs: a raw or qcow2 image on storage both
    # see (checksummed), its console login and the file on this machine with its password
    image: str | None = None
    user: str = "root"
    password_file: str | None = None


class TestbedSpec(Strict):
    """A whole testbed file."""

    __test__ = False

    nodes: Nodes
    migration: MigrationSpec
    guest: GuestSpec = GuestSpec()


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _message(error: Any, data: Any) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{_where(loc)}: unknown key: remove it or check its spelling"
    if kind == "missing":
        return f"{_where(loc)}: missing: add it"
    msg = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    shown = f" (got {value!r})" if not isinstance(value, dict | list) and value is not None else ""
    return f"{_where(loc)}: {msg}{shown if kind not in ('value_error',) else ''}"


def parse_testbed(text: str, source: str, base: Path | None = None) -> TestbedSpec:
    """Validate testbed YAML `text`; UsageError '<source>: <field>: <problem>' when invalid."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{source}: YAML syntax error{where}: {problem}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{source}: expected a mapping with nodes and migration at the top")
    try:
        return TestbedSpec.model_validate(data, context={"base": base})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(f"{source}: {_message(first, data)}") from exc


def load_testbed(path: Path) -> TestbedSpec:
    """Read and validate a testbed file."""
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise UsageError(f"testbed file {path} not found: check the --testbed path") from exc
    except OSError as exc:
        raise UsageError(f"testbed file {path} cannot be read: {exc.strerror}") from exc
    return parse_testbed(text, str(path), base=path.resolve().parent)
