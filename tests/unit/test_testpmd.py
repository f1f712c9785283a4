"""testpmd output parsers and command-line builder."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from vhostlm.apps.testpmd import parse_port_stats
from vhostlm.apps.testpmd import testpmd_argv as build_argv
from vhostlm.errors import UsageError
from vhostlm.nodes.sockets import check_socket_free

STATS = """
  ######################## NIC statistics for port 1  ########################
  RX-packets: 102        RX-missed: 3          RX-bytes:  6324
  RX-errors: 1
  RX-nombuf:  0
  TX-packets: 7          TX-errors: 2          TX-bytes:  434

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:            0          Tx-bps:            0
  ############################################################################
"""


def test_parse_port_stats_reads_every_counter() -> None:
    stats = parse_port_stats(STATS)
    assert stats.port == 1
    assert (stats.rx_packets, stats.rx_missed, stats.rx_bytes, stats.rx_errors) == (102, 3, 6324, 1)
    assert (stats.tx_packets, stats.tx_errors, stats.tx_bytes) == (7, 2, 434)


def test_parse_port_stats_rejects_other_output() -> None:
    with pytest.raises(ValueError, match="no port statistics"):
        parse_port_stats("Invalid port 5\n")


def test_testpmd_argv_puts_eal_before_app_arguments() -> None:
    argv = build_argv(
        "dpdk-testpmd",
        "0-1",
        ["net_vhost0,iface=/run/x.sock,queues=1", "net_af_packet0,iface=eth0"],
        file_prefix="pfx",
        huge_dir="/huge",
        mem_mb=128,
        app_args=["--total-num-mbufs=16384"],
    )
    sep = argv.index("--")
    eal, app = argv[:sep], argv[sep + 1 :]
    assert eal[:3] == ["dpdk-testpmd", "-l", "0-1"]
    assert "--no-pci" in eal
    assert eal[eal.index("--file-prefix") + 1] == "pfx"
    assert eal[eal.index("--huge-dir") + 1] == "/huge"
    assert eal[eal.index("-m") + 1] == "128"
    vdevs = [eal[i + 1] for i, a in enumerate(eal) if a == "--vdev"]
    assert vdevs == ["net_vhost0,iface=/run/x.sock,queues=1", "net_af_packet0,iface=eth0"]
    assert app == ["-i", "--total-num-mbufs=16384"]


def test_socket_in_use_is_refused_and_stale_socket_removed(tmp_path: Path) -> None:
    path = tmp_path / "vhost.sock"
    check_socket_free(path)  # absent: fine
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    try:
        with pytest.raises(UsageError, match="is in use by another program"):
            check_socket_free(path)
    finally:
        server.close()
    assert path.exists()  # closed but the file stays: stale
    check_socket_free(path)
    assert not path.exists()


def test_vhost_backend_argv_for_client_mode_postcopy_and_flood() -> None:
    from vhostlm.backends.base import BackendConfig
    from vhostlm.backends.testpmd import vhost_argv
    from vhostlm.testbed.topology import Nic

    def argv(**kw: object) -> list[str]:
        config = BackendConfig(
            name="t", node=None, rundir=None, socket="/s/v.sock",  # type: ignore[arg-type]
            nic=Nic(interface="veth0"), hugedir="/huge", binary="dpdk-testpmd",
            file_prefix="p", **kw,  # type: ignore[arg-type]
        )  # fmt: skip
        return vhost_argv(config)

    plain = argv()
    assert "net_vhost0,iface=/s/v.sock,queues=1" in plain and "--no-mlockall" not in plain
    client = argv(client=True)
    assert "net_vhost0,iface=/s/v.sock,queues=1,client=1" in client
    postcopy = argv(postcopy=True)
    assert "net_vhost0,iface=/s/v.sock,queues=1,postcopy-support=1" in postcopy
    # an app option, after `--`: testpmd must not pre-fault guest memory for postcopy
    assert postcopy.index("--no-mlockall") > postcopy.index("--")
