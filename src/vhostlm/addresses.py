"""The lab's address plan, program names and probe rates: each defined here once.

Imports nothing from vhostlm, so every layer (apps, testbed, measure, plans, cli, bench)
can take its defaults from here. 198.18.0.0/15 is RFC 2544's benchmarking range.
"""

from __future__ import annotations

# --- the guest ------------------------------------------------------------------------
GUEST_MAC = "52:54:00:00:00:01"  # the seed's MAC, given by QEMU to the guest's virtio NIC

# --- the tester's LAN (tester, host's and backup's ports on the switch) ----------------
TESTER_NET = "198.18.1"  # a /24: the first three octets
PREFIX_LEN = 24  # of the tester's LAN and the migration link alike
TESTER_IP = f"{TESTER_NET}.3"  # the tester's eth0; the probes' source
GUEST_IP = f"{TESTER_NET}.100"  # the guest's NIC when probed (the kernel answers ICMP echo)
SEED_DST_IP = f"{TESTER_NET}.1"  # destination IP of the seed's UDP stream (no one answers)

# --- the host-backup migration link -----------------------------------------------------
MIG_NET = "198.18.0"  # a /24 on mig0: host .1, backup .2
MIG_IPS = {"host": f"{MIG_NET}.1", "backup": f"{MIG_NET}.2"}
MIG_PORT = 4444  # QEMU's `-incoming tcp:<backup>:4444`, as in the seed

# --- the SSH lab's management links -----------------------------------------------------
MGMT_NET = "198.19"  # 198.19.<k>.0/24, a /30 per role

# --- programs, as found on PATH ---------------------------------------------------------
QEMU_BINARY = "qemu-system-x86_64"
TESTPMD_BINARY = "dpdk-testpmd"
# OVS-DPDK (--backend ovs-dpdk): Debian's openvswitch-switch-dpdk. Its ovs-vswitchd with DPDK
# is not on PATH (/usr/sbin/ovs-vswitchd is the alternative without DPDK); the tools are.
OVS_PACKAGE = "openvswitch-switch-dpdk"
OVS_VSWITCHD_BINARY = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"
OVSDB_SERVER_BINARY = "ovsdb-server"
OVSDB_TOOL_BINARY = "ovsdb-tool"
OVS_VSCTL_BINARY = "ovs-vsctl"
OVS_APPCTL_BINARY = "ovs-appctl"
OVS_OFCTL_BINARY = "ovs-ofctl"

# --- the tester's rates -----------------------------------------------------------------
PROBE_PPS = 1000.0  # probes per second: 1 ms outage resolution
SEED_PPS = 50.0  # the seed's stream: `set verbose 1` prints every packet on the console
# The highest rate the tester is asked for: a higher --pps is refused before anything starts.
# Measured with probe.py's own send loop (Python 3.11, 256-byte probes) on a veth pair whose
# far end's kernel answered every probe, on this project's 2-core machine with other runs
# beside it: unpaced it sent 38,000-58,000 probes/s (the receive thread taking every reply
# in the same process); asked for 20,000 it held 18,950-19,950, for 10,000 9,750-9,996.
# Half the unpaced figure leaves the receive thread and a loaded machine their share. What
# a run achieved is measured and reported (`achieved_pps`); a lab that starves the tester
# shows there, not here.
TESTER_MAX_PPS = 20000.0
