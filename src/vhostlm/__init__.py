"""vhostlm: proves DPDK vhost-user live migration works, with numbers."""

__version__ = "0.1.0"
