"""A node over SSH (asyncssh): commands, pty programs, SFTP and unix-socket forwarding.

asyncssh is asyncio-based while the rest of vhostlm is threads waiting on output, so one
daemon thread runs an event loop and the node's methods submit coroutines to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import shlex
import signal
import threading
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TypeVar

import asyncssh

from vhostlm.errors import SetupError, UsageError
from vhostlm.nodes.base import Completed, Node
from vhostlm.nodes.clock import ECHO_SCRIPT
from vhostlm.nodes.stream import OutputStream
from vhostlm.rundir import RunDir

T = TypeVar("T")
PID_RE = re.compile(r"@@vhostlm-pid (\d+)\n")
# `echo` the shell's pid, then `exec` the program in its place: the pid is the program's.
WRAPPER = ["sh", "-c", 'echo "@@vhostlm-pid $$"; exec "$@"', "vhostlm"]


class _Loop:
    """The process-wide asyncio loop thread serving every SSH node."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="ssh-loop", daemon=True).start()
                cls._loop = loop
            return cls._loop


def call(awaitable: Awaitable[T], timeout: float | None = None) -> T:
    """Run `awaitable` on the SSH loop and wait for its result."""

    async def wrap() -> T:
        return await awaitable

    future = asyncio.run_coroutine_threadsafe(wrap(), _Loop.get())
    try:
        return future.result(timeout)
    except TimeoutError:
        future.cancel()
        raise


class SshNode(Node):
    """A server reached over SSH with a key; `sudo` prefixes commands for non-root users."""

    def __init__(
        self,
        name: str,
        address: str,
        user: str = "root",
        key: Path | None = None,
        port: int = 22,
        known_hosts: Path | None = None,
        sudo: bool = False,
        connect_timeout: float = 10.0,
    ) -> None:
        super().__init__(name)
        self.address = address
        self.user = user
        self.key = key
        self.port = port
        self.known_hosts = known_hosts
        self.sudo = sudo
        self.connect_timeout = connect_timeout
        self.local_sockets: Path | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._listeners: list[asyncssh.SSHListener] = []

    @property
    def label(self) -> str:
        """Role and SSH destination."""
        return f"{self.name} ({self.user}@{self.address}:{self.port})"

    def connect(self) -> SshNode:
        """Open the connection; UsageError naming the node and the fix when it cannot."""
        if self._conn is not None:
            return self
        where = f"{self.address}:{self.port}"
        kh = str(self.known_hosts) if self.known_hosts else "~/.ssh/known_hosts"
        try:
            self._conn = call(
                asyncssh.connect(
                    self.address,
                    port=self.port,
                    username=self.user,
                    client_keys=[str(self.key)] if self.key else (),
                    known_hosts=str(self.known_hosts) if self.known_hosts else (),
                    connect_timeout=self.connect_timeout,
                    keepalive_interval=15,
                    config=(),
                ),
                self.connect_timeout + 5,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise UsageError(
                f"node {self.name}: host key of {where} is not the one in {kh} ({exc.reason}): "
                "check the address, or update known_hosts"
            ) from exc
        except asyncssh.PermissionDenied as exc:
            raise UsageError(
                f"node {self.name}: {self.user}@{where} refused key {self.key}: "
                "add its public key to the node's authorized_keys"
            ) from exc
        except ConnectionRefusedError as exc:
            raise UsageError(
                f"node {self.name}: {where} refused the connection: is sshd running and is "
                "the address and port right?"
            ) from exc
        except (OSError, TimeoutError, asyncssh.Error) as exc:
            why = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            raise UsageError(f"node {self.name}: cannot connect to {where}: {why}") from exc
        return self

    @property
    def conn(self) -> asyncssh.SSHClientConnection:
        """The open connection (connecting on first use)."""
        self.connect()
        assert self._conn is not None
        return self._conn

    def command(self, argv: Sequence[str]) -> str:
        """The remote command line for `argv`: every argument quoted, sudo if configured."""
        return shlex.join((["sudo", "-n"] if self.sudo else []) + list(argv))

    def execute(self, argv: Sequence[str], timeout: float = 30.0) -> Completed:
        """Run `argv` on the server (quoted, so values stay data)."""
        try:
            done = call(self.conn.run(self.command(argv), check=False), timeout)
        except TimeoutError as exc:
            raise SetupError(
                f"{self.label}: {' '.join(argv)} did not end in {timeout:.0f} s"
            ) from exc
        except (OSError, asyncssh.Error) as exc:
            raise SetupError(f"{self.label}: SSH failed running {argv[0]}: {exc}") from exc
        status = done.exit_status if done.exit_status is not None else 255
        return Completed(status, str(done.stdout or ""), str(done.stderr or ""))

    def process(
        self, name: str, argv: Sequence[str], rundir: RunDir, env: dict[str, str] | None = None
    ) -> SshProcess:
        """A program in a remote pseudo-terminal."""
        return SshProcess(self, name, argv, rundir, env)

    def put(self, local: Path, remote: str) -> None:
        """Copy a file to the server with SFTP."""

        conn = self.conn  # connect here: the loop thread must not wait on itself

        async def copy() -> None:
            async with conn.start_sftp_client() as sftp:
                await sftp.put(str(local), remote)

        try:
            call(copy(), 600)
        except (OSError, asyncssh.Error) as exc:
            raise SetupError(f"{self.label}: cannot copy {local} to {remote}: {exc}") from exc

    def get(self, remote: str, local: Path) -> None:
        """Copy a file from the server with SFTP."""

        conn = self.conn

        async def copy() -> None:
            async with conn.start_sftp_client() as sftp:
                await sftp.get(remote, str(local))

        try:
            call(copy(), 600)
        except (OSError, asyncssh.Error) as exc:
            raise SetupError(f"{self.label}: cannot copy {remote} from the node: {exc}") from exc

    def clock_samples(self, python: str, count: int) -> list[tuple[float, float, float]]:
        """Ask the node's clock `count` times over this connection (nodes/clock.py's echo
        script under the node's Python), each exchange timed on the SSH loop itself."""
        conn = self.conn
        command = self.command([python, "-u", "-c", ECHO_SCRIPT])

        async def exchange() -> list[tuple[float, float, float]]:
            proc = await conn.create_process(command, encoding="utf-8")
            try:
                ready = await proc.stdout.readline()
                if ready.strip() != "ready":
                    err = (await proc.stderr.read()).strip().splitlines()[-1:]
                    raise SetupError(f"{self.label}: clock exchange failed: {' '.join(err)}")
                samples = []
                for _ in range(count):
                    t0 = time.time()
                    proc.stdin.write("\n")
                    line = await proc.stdout.readline()
                    t2 = time.time()
                    samples.append((t0, int(line) / 1e9, t2))
                return samples
            finally:
                proc.stdin.write_eof()
                proc.close()

        try:
            return call(exchange(), 30)
        except (OSError, asyncssh.Error, ValueError, TimeoutError) as exc:
            raise SetupError(f"{self.label}: clock exchange failed: {exc}") from exc

    def reach(self, remote_socket: str) -> Path:
        """Forward a local unix socket (in the run's socket directory) to the remote one."""
        if self.local_sockets is None:
            raise SetupError(f"{self.label}: no local socket directory to forward to")
        local = self.local_sockets / f"{self.name}-{Path(remote_socket).name}"
        with contextlib.suppress(FileNotFoundError):
            local.unlink()
        listener: asyncssh.SSHListener = call(
            self.conn.forward_local_path(str(local), remote_socket), 15
        )
        self._listeners.append(listener)
        return local

    def close(self) -> None:
        """Close forwards and the connection (remote pty programs then get SIGHUP)."""
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
            with contextlib.suppress(Exception):
                call(conn.wait_closed(), 5)


class SshProcess:
    """A program in a pseudo-terminal on an SSH node; its pid is learnt from a wrapper."""

    def __init__(
        self,
        node: SshNode,
        name: str,
        argv: Sequence[str],
        rundir: RunDir,
        env: dict[str, str] | None,
    ) -> None:
        self.node = node
        self.name = name
        self.rundir = rundir
        # VHOSTLM_RUN marks the process as this run's, so a later `lab down` can tell it
        # from an unrelated process that reused its pid
        marks = {"VHOSTLM_RUN": rundir.run_id, **(env or {})}
        self.argv = ["env", *(f"{k}={v}" for k, v in marks.items()), *argv]
        self.output = OutputStream(name, rundir.log_path(name))
        self._proc: asyncssh.SSHClientProcess[str] | None = None
        self._pid = 0
        self._reader: concurrent.futures.Future[None] | None = None

    @property
    def pid(self) -> int:
        """The program's pid on the node."""
        return self._pid

    def start(self) -> SshProcess:
        """Start the program on the node and learn its pid."""
        self.rundir.record_command(f"{self.name} on {self.node.label}", self.argv)
        cmd = self.node.command([*WRAPPER, *self.argv])
        conn = self.node.conn

        async def open_proc() -> asyncssh.SSHClientProcess[str]:
            return await conn.create_process(
                cmd,
                term_type="dumb",
                term_size=(250, 50),
                term_modes={asyncssh.PTY_ECHO: 0},
                encoding="utf-8",
                errors="replace",
            )

        try:
            self._proc = call(open_proc(), 30)
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise SetupError(
                f"{self.name}: cannot start {self.argv[0]} on {self.node.label}: {exc}"
            ) from exc
        self._reader = asyncio.run_coroutine_threadsafe(self._drain(self._proc), _Loop.get())
        try:
            found = self.output.expect(PID_RE, 30, alive=self.alive)
        except SetupError as exc:
            raise SetupError(f"{self.name}: did not start on {self.node.label}: {exc}") from exc
        self._pid = int(found.group(1))
        self.rundir.record("remote_pids", [self.node.name, self._pid])
        return self

    async def _drain(self, proc: asyncssh.SSHClientProcess[str]) -> None:
        try:
            while True:
                chunk = await proc.stdout.read(65536)
                if not chunk:
                    break
                self.output.feed(chunk)
            await proc.wait_closed()
        except (OSError, asyncssh.Error):
            pass
        finally:
            self.output.close()

    def alive(self) -> bool:
        """True while the remote program runs."""
        return (
            self._proc is not None
            and self._proc.exit_status is None
            and not (self._reader is not None and self._reader.done())
        )

    @property
    def returncode(self) -> int | None:
        """The exit status (negative signal number when killed), once ended."""
        if self._proc is None or self.alive():
            return None
        return self._proc.returncode

    def send(self, line: str) -> None:
        """Type one line into the program's terminal."""
        if self._proc is None or not self.alive():
            raise SetupError(f"{self.name} is not running (exit {self.returncode})")
        proc = self._proc
        _Loop.get().call_soon_threadsafe(proc.stdin.write, line + "\n")

    def expect(self, pattern: str, timeout: float, since: int = 0) -> str:
        """Wait for `pattern` in the output after `since`; return the matched text."""
        return self.output.expect(pattern, timeout, since, alive=self.alive).group(0)

    def wait(self, timeout: float) -> int | None:
        """Wait up to `timeout` s for the program to end."""
        if self._reader is None:
            return None
        with contextlib.suppress(TimeoutError, Exception):
            self._reader.result(timeout)
        return self.returncode

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        """End the program by its pid on the node, then close the session."""
        if self._proc is None:
            return None
        if self.alive() and self._pid:
            for signum, grace in ((sig, timeout), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(SetupError):
                    self.node.execute(["kill", f"-{int(signum)}", str(self._pid)])
                if self.wait(grace) is not None or not self.alive():
                    break
        proc = self._proc
        with contextlib.suppress(Exception):
            _Loop.get().call_soon_threadsafe(proc.close)
        self.wait(2)
        self.rundir.forget("remote_pids", [self.node.name, self._pid])
        return self.returncode
