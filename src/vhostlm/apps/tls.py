"""TLS for the migration stream: certificates made for one run, QEMU tls-creds-x509 objects.

`--migration-tls` encrypts the migration with QEMU's own TLS (gnutls). A CA, a server
certificate (the migration addresses in its subjectAltName, so the source can check the
destination's name) and a client certificate (the destination checks the source:
verify-peer) are made with the openssl CLI into the run's 0700 runtime directory, where
keys stay 0600 and are removed with the run. The CA's key is deleted once both are signed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vhostlm.apps.qemu import QemuVm
from vhostlm.errors import SetupError
from vhostlm.rundir import RunDir

OPENSSL = "openssl"
DAYS = "2"  # a run's certificates need not outlive it
SERVER_ID = "vhostlm-tls-server"
CLIENT_ID = "vhostlm-tls-client"


@dataclass(frozen=True)
class TlsDirs:
    """QEMU's tls-creds-x509 `dir` of each endpoint."""

    server: Path
    client: Path


def _openssl(rundir: RunDir | None, name: str, args: list[str]) -> None:
    argv = [OPENSSL, *args]
    if rundir is not None:
        rundir.record_command(name, argv)
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SetupError(f"{name}: openssl failed: {last}")


def _extensions(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def make_credentials(root: Path, server_ips: list[str], rundir: RunDir | None = None) -> TlsDirs:
    """A CA, a server and a client certificate under `root` (reused when already there)."""
    if shutil.which(OPENSSL) is None:
        raise SetupError("openssl not found: apt-get install openssl (needed by --migration-tls)")
    dirs = TlsDirs(root / "server", root / "client")
    if (dirs.server / "server-cert.pem").exists() and (dirs.client / "client-cert.pem").exists():
        return dirs
    old = os.umask(0o077)  # keys readable by their owner only, from the first byte
    try:
        for path in (root, dirs.server, dirs.client):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        ca_key, ca_cert = root / "ca-key.pem", dirs.server / "ca-cert.pem"
        _openssl(rundir, "tls-ca", [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", DAYS,
            "-subj", "/CN=vhostlm migration CA", "-keyout", str(ca_key), "-out", str(ca_cert),
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ])  # fmt: skip
        shutil.copy(ca_cert, dirs.client / "ca-cert.pem")
        san = ",".join(f"IP:{ip}" for ip in server_ips)
        for kind, where, cn, usage in (
            ("server", dirs.server, server_ips[0], ["extendedKeyUsage=serverAuth",
                                                    f"subjectAltName={san}"]),
            ("client", dirs.client, "vhostlm migration source", ["extendedKeyUsage=clientAuth"]),
        ):  # fmt: skip
            key, csr = where / f"{kind}-key.pem", root / f"{kind}.csr"
            ext = _extensions(root / f"{kind}.ext", [
                "basicConstraints=critical,CA:FALSE",
                "keyUsage=critical,digitalSignature,keyEncipherment", *usage,
            ])  # fmt: skip
            _openssl(rundir, f"tls-{kind}-key", [
                "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                "-keyout", str(key), "-out", str(csr),
            ])  # fmt: skip
            _openssl(rundir, f"tls-{kind}-cert", [
                "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
                "-set_serial", "2" if kind == "server" else "3", "-days", DAYS,
                "-extfile", str(ext), "-out", str(where / f"{kind}-cert.pem"),
            ])  # fmt: skip
            csr.unlink()
            ext.unlink()
        ca_key.unlink()  # nothing more is signed with it
    finally:
        os.umask(old)
    return dirs


# QEMU before 10.2 generates 2048-bit DH parameters when a server endpoint's credentials
# have no dh-params.pem: in its main thread, at object-add, 0.1-1.1 s of a core here (QEMU
# 10.0.2: 0.13, 0.25, 1.11 s; 0.04-0.05 s with the file), which on a 2-core testbed
# starved the source's TCG vCPUs and lost probes before the migration (CI, stop 22). The
# file holds RFC 7919's ffdhe2048 group, a named constant, so nothing is generated. QEMU
# 10.2 negotiates RFC 7919 by itself and deprecates the file (crypto/tlscreds.c), so it
# gets none.
DH_PARAMS = "dh-params.pem"
DH_PARAMS_UNTIL_QEMU = (10, 2)


def wants_dh_params(version: tuple[int, int] | None) -> bool:
    """Whether this QEMU's server credentials need dh-params.pem (None: not known, the
    newest: no)."""
    return version is not None and version < DH_PARAMS_UNTIL_QEMU


def ensure_dh_params(server_dir: Path, wanted: bool, rundir: RunDir | None = None) -> None:
    """Put RFC 7919's ffdhe2048 group in `server_dir`'s dh-params.pem, or take it away."""
    path = server_dir / DH_PARAMS
    if not wanted:
        path.unlink(missing_ok=True)
    elif not path.exists():
        _openssl(rundir, "tls-dh-params", [
            "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "dh_param:ffdhe2048",
            "-out", str(path),
        ])  # fmt: skip


def creds_object(obj_id: str, directory: str | Path, endpoint: str) -> dict[str, Any]:
    """QMP object-add arguments of a tls-creds-x509 object that verifies its peer."""
    return {
        "qom-type": "tls-creds-x509",
        "id": obj_id,
        "dir": str(directory),
        "endpoint": endpoint,
        "verify-peer": True,
    }


class MigrationTls:
    """Gives each QEMU of a case the credentials of its end of a migration, once."""

    def __init__(
        self,
        root: Path,
        server_ips: list[str],
        rundir: RunDir | None = None,
        stage: Callable[[QemuVm, Path], str] | None = None,
    ) -> None:
        self.root = root
        self.stage = stage  # copies an endpoint's directory to the QEMU's node, if remote
        self.server_ips = server_ips
        self.rundir = rundir
        self._dirs: TlsDirs | None = None
        self._added: dict[str, set[str]] = {}  # QEMU name -> object ids added to it

    def _object(self, vm: QemuVm, obj_id: str, endpoint: str) -> str:
        if self._dirs is None:
            self._dirs = make_credentials(self.root, self.server_ips, self.rundir)
        added = self._added.setdefault(vm.spec.name, set())
        if obj_id not in added:
            local = self._dirs.server if endpoint == "server" else self._dirs.client
            if endpoint == "server":
                ensure_dh_params(local, wants_dh_params(vm.spec.qemu_version), self.rundir)
            directory = self.stage(vm, local) if self.stage else str(local)
            vm.qmp("object-add", **creds_object(obj_id, directory, endpoint))
            added.add(obj_id)
        return obj_id

    def source_parameters(self, vm: QemuVm, destination_ip: str) -> dict[str, str]:
        """Migration parameters of the source: client credentials, the name to check."""
        return {
            "tls-creds": self._object(vm, CLIENT_ID, "client"),
            "tls-hostname": destination_ip,
        }

    def destination_parameters(self, vm: QemuVm) -> dict[str, str]:
        """Migration parameters of the destination: server credentials."""
        return {"tls-creds": self._object(vm, SERVER_ID, "server")}
