"""Start and stop a real `redis-server` on loopback, for tests and `skillfactory up`.

    with RedisServer(data_dir, password="s3cret", appendonly=True) as server:
        queue = RedisStreamsQueue(server.url, password="s3cret")

The configuration (port, data directory, password, persistence) is written to `redis.conf` in the
data directory (mode 0600, so the password is not on a command line); the log goes to
`redis.log` there. `restart()` reuses the same port and directory, so with AOF on the data
survives; `kill()` stops the server with SIGKILL, like a crash.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType


class RedisServerError(RuntimeError):
    """redis-server is missing, did not start, or did not answer."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (another process could still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process bound to `host` with its data in `data_dir`."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        password: str | None = None,
        appendonly: bool = False,
        appendfsync: str = "always",
        executable: str = "redis-server",
        start_timeout_s: float = 10.0,
    ) -> None:
        path = shutil.which(executable)
        if path is None:
            raise RedisServerError(f"{executable!r} is not on PATH (apt install redis-server)")
        if password is not None and (not password or any(c in password for c in '"\\\r\n ')):
            raise ValueError("password must be non-empty without quotes, backslashes or whitespace")
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync must be always, everysec or no, got {appendfsync!r}")
        self.executable = path
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.password = password
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """`redis://host:port/0` (no password: pass it apart)."""
        if self.port is None:
            raise RedisServerError("the server has not been started")
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def _write_config(self) -> Path:
        lines = [
            f"bind {self.host}",
            f"port {self.port}",
            f'dir "{self.data_dir.resolve()}"',
            'logfile "redis.log"',
            "daemonize no",
            'save ""',  # no RDB snapshots: persistence is AOF or nothing
            f"appendonly {'yes' if self.appendonly else 'no'}",
            f"appendfsync {self.appendfsync}",
        ]
        if self.password is not None:
            lines.append(f'requirepass "{self.password}"')
        conf = self.data_dir / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        return conf

    def _server_pid(self) -> int | None:
        """The process id of whatever Redis answers on our port, None if none answers (yet)."""
        try:
            with socket.create_connection((self.host, self.port or 0), timeout=0.5) as sock:
                if self.password is not None:
                    sock.sendall(_command("AUTH", self.password))
                    if not sock.recv(64).startswith(b"+OK"):
                        return None
                sock.sendall(_command("INFO", "server"))
                reply = b""
                while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                    chunk = sock.recv(65536)
                    reply += chunk
                    if not chunk or reply.startswith(b"-"):  # closed, or -LOADING / -ERR
                        return None
        except OSError:
            return None
        line = reply.split(b"process_id:", 1)[1].split(b"\r\n", 1)[0]
        return int(line)

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING; a taken free port is retried."""
        if self._process is not None and self._process.poll() is None:
            raise RedisServerError(f"already running (pid {self._process.pid})")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fixed_port = self.port is not None
        for _ in range(1 if fixed_port else 5):
            if not fixed_port:
                self.port = free_port(self.host)
            conf = self._write_config()
            process = subprocess.Popen(
                [self.executable, str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + self.start_timeout_s
            while time.monotonic() < deadline and process.poll() is None:
                # Check the pid: another server may already hold a fixed port.
                if self._server_pid() == process.pid:
                    self._process = process
                    return self
                time.sleep(0.02)
            if process.poll() is None:
                process.kill()
            process.wait()
        raise RedisServerError(
            f"redis-server did not start on {self.host}:{self.port}; see {self.data_dir / 'redis.log'}:\n"
            + self._log_tail()
        )

    def running(self) -> bool:
        """Whether the server process this object started is alive."""
        return self._process is not None and self._process.poll() is None

    def _log_tail(self, lines: int = 10) -> str:
        try:
            text = (self.data_dir / "redis.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (Redis flushes the AOF and exits), SIGKILL if it takes over `timeout_s`."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL, like a crash: only what was already written to disk survives."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self, *, crash: bool = False) -> RedisServer:
        """Stop (or kill, with `crash`) and start again on the same port and directory."""
        if crash:
            self.kill()
        else:
            self.stop()
        return self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _command(*args: str) -> bytes:
    """A RESP array (the Redis wire format) for one command."""
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)
