# vhostlm: `make run` runs the seed plan on the embedded lab, `make test` runs the tests.
# Both install what is missing first: Debian packages with apt-get, Python packages in .venv.

VENV      ?= .venv
PY        := $(VENV)/bin/python
VHOSTLM   := $(VENV)/bin/vhostlm
PYTHON    ?= python3
APT_PACKAGES := python3 python3-venv python3-pip \
	dpdk-dev librte-net-vhost23 librte-net-virtio23 librte-net-af-packet23 \
	librte-mempool-ring23 busybox-static cpio iproute2 tcpdump ethtool kmod procps \
	iputils-ping chromium openssh-server openssh-client dpdk openssl gcc libc6-dev libfaketime \
	mmdebstrap syslinux syslinux-common mtools dosfstools fdisk openvswitch-switch-dpdk
RUN_ARGS  ?=
PYTEST_ARGS ?=
# QEMU before 9.0 loses TCG guest writes from the migration's dirty bitmap ("physmem: Fix
# migration dirty bitmap coherency with TCG memory access", QEMU 9.0): the destination guest
# of a vhost-user migration crashed (issue 4; bench/crash_repro.py). Debian 12 ships 7.2,
# so QEMU comes from bookworm-backports there (and only from there: not 7.2 first).
QEMU_PACKAGES := qemu-system-x86 qemu-utils
QEMU_MIN  := 9
QEMU_MAJOR = qemu-system-x86_64 --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\).*/\1/p'
BACKPORTS := /etc/apt/sources.list.d/vhostlm-bookworm-backports.list

.PHONY: all run test test-full deps venv image disk lint unit e2e bench clean down

all: test

deps:
	@installed() { dpkg-query -W -f='$${Status}' $$1 2>/dev/null | grep -q "ok installed"; }; \
	missing=""; for p in $(APT_PACKAGES); do installed $$p || missing="$$missing $$p"; done; \
	qemu=""; for p in $(QEMU_PACKAGES); do installed $$p || qemu="$$qemu $$p"; done; \
	backports=""; . /etc/os-release; major=$$($(QEMU_MAJOR)); \
	if [ "$$VERSION_CODENAME" != bookworm ]; then \
		missing="$$missing$$qemu"; \
	elif [ -n "$$qemu" ] || [ "$${major:-0}" -lt $(QEMU_MIN) ]; then \
		backports="$(QEMU_PACKAGES)"; \
		echo "deb http://deb.debian.org/debian bookworm-backports main" > $(BACKPORTS); \
	fi; \
	if [ -n "$$missing$$backports" ]; then \
		[ -z "$$missing" ] || echo "installing Debian packages:$$missing"; \
		[ -z "$$backports" ] || echo "installing from bookworm-backports (QEMU >= $(QEMU_MIN)): $$backports"; \
		guard=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
			printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; guard=1; \
		fi; \
		apt-get update -q \
			&& { [ -z "$$missing" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; } \
			&& { [ -z "$$backports" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
				--no-install-recommends -t bookworm-backports $$backports; }; rc=$$?; \
		if [ -n "$$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
		[ $$rc -eq 0 ] || exit $$rc; \
	fi; \
	major=$$($(QEMU_MAJOR)); if [ "$${major:-0}" -lt $(QEMU_MIN) ]; then \
		echo "QEMU $${major:-not found} is older than $(QEMU_MIN).0 (TCG loses dirty pages in migration): install qemu-system-x86 >= $(QEMU_MIN).0" >&2; exit 1; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

image: deps venv
	$(VHOSTLM) image build

disk: deps venv
	$(VHOSTLM) image disk

run: deps venv image
	$(VHOSTLM) run $(RUN_ARGS)

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/pytest -q tests/unit $(PYTEST_ARGS)

# the unit tests on both cores (pytest-xdist: 104 s -> 64 s here), then the end-to-end
# tests one at a time (each starts its own lab, guests and backends)
test: deps venv image disk lint
	$(VENV)/bin/pytest -q -n 2 tests/unit
	$(VENV)/bin/pytest -v -rs --durations=30 tests/e2e $(PYTEST_ARGS)

# every case of the plans `make test` samples (tests/e2e/conftest.py FULL)
test-full:
	VHOSTLM_FULL=1 $(MAKE) test

bench: deps venv image
	$(PY) bench/seed_bench.py

down: venv
	$(VHOSTLM) lab down

clean:
	rm -rf $(VENV) build src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
