"""Local processes for the demo (and the test suite): servers on loopback ports, and a
Celery worker with embedded beat as a child process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


class ServerThread:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


def wait_for(
    predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: last={last!r}")


class WorkerProcess:
    """`celery worker -B` as a real child process, with its own environment."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        concurrency: int = 2,
        beat: bool = True,
        queues: list[str] | None = None,
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.concurrency = concurrency
        self.queues = queues  # unprefixed names; every queue of the deployment if None
        self.beat = beat  # exactly one process of a deployment may run beat
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        from bridge.config import Settings
        from workers.app import queues_for

        systems = [s for s in self.env.get("POSBRIDGE_SYSTEMS", "").split(",") if s]
        prefix = self.env.get("POSBRIDGE_QUEUE_PREFIX", "")
        every = queues_for(Settings(_env_file=None, systems=systems, queue_prefix=prefix))
        queues = ",".join(every if self.queues is None else [prefix + q for q in self.queues])
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, **self.env, "PYTHONPATH": pythonpath}
        self.ready_file = Path(self.env["POSBRIDGE_VAR_DIR"]) / f"worker-ready-{uuid.uuid4().hex[:8]}"
        env["POSBRIDGE_READY_FILE"] = str(self.ready_file)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers",
                "worker",
                *(["-B"] if self.beat else []),
                "-Q",
                queues,
                "-c",
                str(self.concurrency),
                "--loglevel",
                "INFO",
                "-n",
                f"w{uuid.uuid4().hex[:6]}@%h",
                "-s",
                str(Path(self.env["POSBRIDGE_VAR_DIR"]) / f"beat-{uuid.uuid4().hex[:6]}"),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(lambda: self.ready_file.exists() or self._dead(), timeout=180, what="worker ready")
        except AssertionError:
            self.kill9()
            raise
        if self._dead():
            raise RuntimeError(f"worker died: {self.log_path.read_text()[-3000:]}")
        return self

    def _dead(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def children(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]

    def kill9(self) -> None:
        """Kill the whole worker (parent and pool children) with SIGKILL."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill9()
