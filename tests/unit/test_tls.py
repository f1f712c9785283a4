"""Certificates made for --migration-tls: a chain QEMU accepts, keys kept private."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from vhostlm.apps.tls import creds_object, ensure_dh_params, make_credentials, wants_dh_params

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout


def test_server_and_client_certificates_chain_to_the_run_ca(tmp_path: Path) -> None:
    dirs = make_credentials(tmp_path / "tls", ["198.18.0.2", "198.18.0.1"])
    assert sorted(p.name for p in dirs.server.iterdir()) == [
        "ca-cert.pem", "server-cert.pem", "server-key.pem"
    ]  # fmt: skip
    assert sorted(p.name for p in dirs.client.iterdir()) == [
        "ca-cert.pem", "client-cert.pem", "client-key.pem"
    ]  # fmt: skip
    ca = str(dirs.server / "ca-cert.pem")
    for cert, purpose in ((dirs.server / "server-cert.pem", "sslserver"),
                          (dirs.client / "client-cert.pem", "sslclient")):  # fmt: skip
        assert "OK" in openssl("verify", "-CAfile", ca, "-purpose", purpose, str(cert))
    server = openssl("x509", "-in", str(dirs.server / "server-cert.pem"), "-noout", "-text")
    assert "IP Address:198.18.0.2, IP Address:198.18.0.1" in server
    assert not (tmp_path / "tls" / "ca-key.pem").exists()  # nothing more gets signed


def test_keys_and_directories_are_private(tmp_path: Path) -> None:
    dirs = make_credentials(tmp_path / "tls", ["198.18.0.2"])
    for path in (tmp_path / "tls", dirs.server, dirs.client):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for key in (dirs.server / "server-key.pem", dirs.client / "client-key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_existing_credentials_are_reused(tmp_path: Path) -> None:
    first = make_credentials(tmp_path / "tls", ["198.18.0.2"])
    cert = (first.server / "server-cert.pem").read_text()
    second = make_credentials(tmp_path / "tls", ["198.18.0.2"])
    assert (second.server / "server-cert.pem").read_text() == cert


def test_qemu_object_verifies_its_peer(tmp_path: Path) -> None:
    assert creds_object("tls0", tmp_path, "server") == {
        "qom-type": "tls-creds-x509",
        "id": "tls0",
        "dir": str(tmp_path),
        "endpoint": "server",
        "verify-peer": True,
    }


def test_dh_params_by_qemu_version() -> None:
    """QEMU before 10.2 generates DH parameters without the file; 10.2 deprecates it."""
    assert wants_dh_params((10, 0)) and wants_dh_params((9, 2))
    assert not wants_dh_params((10, 2)) and not wants_dh_params((11, 0))
    assert not wants_dh_params(None)


def test_dh_params_are_rfc7919s_named_group_and_qemu_loads_them(tmp_path: Path) -> None:
    dirs = make_credentials(tmp_path / "tls", ["198.18.0.2"])
    ensure_dh_params(dirs.server, True)
    text = openssl("pkeyparam", "-in", str(dirs.server / "dh-params.pem"), "-noout", "-text")
    assert "ffdhe2048" in text and "2048 bit" in text, text
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is not None:  # the server endpoint loads them (a bad file fails object creation)
        obj = f"tls-creds-x509,id=t,dir={dirs.server},endpoint=server"
        proc = subprocess.run(
            [qemu, "-machine", "none", "-nodefaults", "-display", "none", "-object", obj,
             "-qmp", "stdio"],
            input='{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n',
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 0 and "rror" not in proc.stderr, proc.stderr
    ensure_dh_params(dirs.server, False)  # a QEMU >= 10.2: no file
    assert not (dirs.server / "dh-params.pem").exists()
