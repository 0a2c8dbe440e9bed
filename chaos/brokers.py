"""Brokers of the run's own, so that restarting one disturbs nothing else on the machine.

A chaos run restarts its broker mid-run. The machine's shared Redis and RabbitMQ also
serve other test stacks (the suite runs in parallel), so each run starts a private
server on free ports and restarts that one instead.

- Redis: `redis-server` without persistence; a restart loses every queued message,
  which is the harshest case (the sweeper must re-send all due work from the database).
- RabbitMQ: a second node (own name, ports, data directory); a restart is
  `stop_app`/`start_app`, and durable queues keep their messages.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from bridge.demo.processes import free_port, port_open, wait_for


class PrivateBroker:
    kind: str
    url: str

    def start(self) -> None:
        raise NotImplementedError

    def down(self) -> None:
        raise NotImplementedError

    def up(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class PrivateRedis(PrivateBroker):
    kind = "redis"

    def __init__(self, var: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = var / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--logfile", str(self.log),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        wait_for(lambda: port_open("127.0.0.1", self.port), timeout=30, what="private redis")

    def down(self) -> None:
        # SIGKILL, not SHUTDOWN: a crash, and with no persistence every message is gone.
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def up(self) -> None:
        if self.proc is None:
            self.start()

    def close(self) -> None:
        self.down()


class PrivateRabbit(PrivateBroker):
    kind = "rabbitmq"

    def __init__(self, var: Path) -> None:
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"chaos{uuid.uuid4().hex[:8]}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        # Its own folder, not under the run's (mkdtemp makes that 0700 and root's): the node
        # runs as the rabbitmq user and must reach its files.
        self.dir = Path(tempfile.mkdtemp(prefix="posbridge-rabbit-"))
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbit.conf"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "plugins"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
        }

    def _ctl(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["rabbitmqctl", "-n", self.node, *args], env=self.env, capture_output=True, check=False
        )

    def start(self) -> None:
        self.dir.chmod(0o755)
        (self.dir / "rabbit.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (self.dir / "plugins").write_text("[].\n")
        if os.geteuid() == 0 and shutil.which("chown"):
            # Started as root, rabbitmq-server drops to the rabbitmq user, which must own the node's files.
            subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(self.dir)], check=False)
        subprocess.run(["rabbitmq-server", "-detached"], env=self.env, check=True, capture_output=True)
        wait_for(lambda: port_open("127.0.0.1", self.port), timeout=90, what=f"RabbitMQ node {self.node}")

    def down(self) -> None:
        self._ctl("stop_app")

    def up(self) -> None:
        self._ctl("start_app")
        wait_for(lambda: port_open("127.0.0.1", self.port), timeout=60, what=f"{self.node} back")

    def close(self) -> None:
        self._ctl("stop")
        deadline = time.monotonic() + 20
        while port_open("127.0.0.1", self.port) and time.monotonic() < deadline:
            time.sleep(0.2)
        shutil.rmtree(self.dir, ignore_errors=True)


def private_broker(kind: str, var: Path) -> PrivateBroker:
    return PrivateRedis(var) if kind == "redis" else PrivateRabbit(var)
