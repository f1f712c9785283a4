"""The testbed file: a valid one loads, every malformed one gives one line naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vhostlm.errors import UsageError
from vhostlm.testbed.model import load_testbed, parse_testbed


def valid(tmp_path: Path) -> dict[str, object]:
    key = tmp_path / "id_ed25519"
    key.write_text("not really a key, only has to exist\n")

    def node(addr: str, port: dict[str, str]) -> dict[str, object]:
        return {"ssh": {"address": addr, "key": "id_ed25519"}, "port": port}

    return {
        "nodes": {
            "host": node("192.0.2.10", {"pci": "0000:3B:00.0", "driver": "vfio-pci"}),
            "backup": node("192.0.2.11", {"pci": "0000:3b:00.1", "driver": "igb_uio"}),
            "tester": node("192.0.2.12", {"interface": "ens1f0"}),
        },
        "migration": {"host": "198.18.0.1", "backup": "198.18.0.2"},
    }


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "testbed.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_valid_file_loads_with_defaults_and_relative_key(tmp_path: Path) -> None:
    spec = load_testbed(write(tmp_path, valid(tmp_path)))
    host = spec.nodes.host
    assert host.ssh is not None and host.ssh.key == tmp_path / "id_ed25519"
    assert host.ssh.user == "root" and host.ssh.port == 22
    assert host.port.pci == "0000:3b:00.0"  # normalised to lower case
    assert host.hugepages.mount == "/dev/hugepages"
    assert spec.migration.port == 4444 and spec.guest.accel == "auto"


def test_local_node_in_a_namespace(tmp_path: Path) -> None:
    data = valid(tmp_path)
    data["nodes"]["tester"] = {"local": True, "netns": "t1", "port": {"interface": "eth0"}}  # type: ignore[index]
    spec = load_testbed(write(tmp_path, data))
    assert spec.nodes.tester.local and spec.nodes.tester.netns == "t1"


def mutate(path: str, value: object):  # type: ignore[no-untyped-def]
    """A change to the valid testbed: set (or with value DELETE, remove) a dotted key."""

    def apply(data: dict[str, object]) -> None:
        *parents, last = path.split(".")
        target = data
        for part in parents:
            target = target[part]  # type: ignore[assignment]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value

    return apply


DELETE = object()

BAD = [
    ("unknown top key", mutate("switch", {"a": 1}), "switch: unknown key"),
    ("unknown node key", mutate("nodes.host.adress", "x"), "nodes.host.adress: unknown key"),
    ("unknown role", mutate("nodes.dut", {}), "nodes.dut: unknown key"),
    ("missing backup", mutate("nodes.backup", DELETE), "nodes.backup: missing"),
    ("missing migration", mutate("migration", DELETE), "migration: missing"),
    ("port not a number", mutate("nodes.host.ssh.port", "twenty-two"), "nodes.host.ssh.port:"),
    ("port out of range", mutate("nodes.host.ssh.port", 70000), "nodes.host.ssh.port:"),
    ("bad pci", mutate("nodes.host.port.pci", "3b:00.0"), "not a PCI address"),
    ("pci without driver", mutate("nodes.backup.port.driver", DELETE), "needs a driver"),
    ("unknown driver", mutate("nodes.host.port.driver", "e1000"), "nodes.host.port.driver:"),
    ("pci and interface", mutate("nodes.host.port.interface", "eth1"), "either pci"),
    (
        "tester on pci",
        mutate("nodes.tester.port", {"pci": "0000:01:00.0", "driver": "vfio-pci"}),
        "tester.port must be an interface",
    ),  # fmt: skip
    ("bad interface", mutate("nodes.tester.port.interface", "eth 0; reboot"), "not an interface"),
    ("no way to reach", mutate("nodes.host.ssh", DELETE), "either ssh"),
    ("ssh and local", mutate("nodes.host.local", True), "either ssh"),
    ("absent key", mutate("nodes.host.ssh.key", "/nonexistent/key"), "SSH key /nonexistent/key"),
    ("hostile address", mutate("nodes.host.ssh.address", "a; touch /tmp/pwned"), "not a host"),
    ("relative workdir", mutate("nodes.host.workdir", "tmp/x"), "nodes.host.workdir:"),
    ("relative hugepages", mutate("nodes.host.hugepages", {"mount": "huge"}), "hugepages.mount:"),
    ("bad migration ip", mutate("migration.backup", "198.18.0.300"), "migration.backup:"),
    ("bad accel", mutate("guest.accel", "hvf"), "guest.accel:"),
    ("sudo not bool", mutate("nodes.host.ssh.sudo", "maybe"), "nodes.host.ssh.sudo:"),
]


@pytest.mark.parametrize(("change", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_malformed_testbed_names_the_field(tmp_path: Path, change, expected: str) -> None:  # type: ignore[no-untyped-def]
    data = valid(tmp_path)
    data.setdefault("guest", {})
    change(data)
    path = write(tmp_path, data)
    with pytest.raises(UsageError) as err:
        load_testbed(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "nodes:\n  host: {ssh: [\n")
    with pytest.raises(UsageError, match=r"YAML syntax error at line \d+ column \d+"):
        load_testbed(path)


def test_not_a_mapping_and_absent_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="expected a mapping"):
        parse_testbed("- a\n- b\n", "t.yaml")
    with pytest.raises(UsageError, match="testbed file .* not found"):
        load_testbed(tmp_path / "nope.yaml")
