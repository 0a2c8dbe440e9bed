"""The vendor's own example scripts, run unchanged (host, port, scheme aside) against the
sandbox served by uvicorn on a real loopback port: the sandbox is the server they expect."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from bridge.adapters.onsite.sandbox import OnSiteSandbox

pytest.importorskip("requests", reason="the seed scripts use requests")

SCRIPTS = Path(__file__).parent / "seed_scripts"
PHOTO = b"\xff\xd8\xff\xe0 sample photo \xff\xd9"
NEW_PHOTO = b"\xff\xd8\xff\xe0 replaced photo \xff\xd9"


class Server:
    def __init__(self, sandbox: OnSiteSandbox, port: int) -> None:
        self.sandbox = sandbox
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.control = httpx.Client(base_url=self.url, timeout=10)

    def seed(self, count: int) -> None:
        """`count` customers; 3 is the seed's Justine Trudel, 15 its Jane Smith."""
        self.control.post("/_sandbox/reset")
        for n in range(1, count + 1):
            if n == 3:
                fields = {
                    "first": "Justine",
                    "last": "Trudel",
                    "company": "Modeling Agency Ltd.",
                    "email": "justine@example.com",
                    "homepage": "www.example.com",
                    "phone_numbers": [
                        {"type": "work", "number": "123-456-7890"},
                        {"type": "mobile", "number": "098-765-4321", "main": True},
                    ],
                }
            elif n == 15:
                fields = {
                    "first": "Jane",
                    "last": "Smith",
                    "phone_numbers": [{"type": "home", "number": "613-555-5555"}],
                }
            else:
                fields = {"first": f"Person{n}", "last": f"Number{n}"}
            assert self.control.post("/_sandbox/edit", json={"fields": fields}).status_code == 200

    def run(self, script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        source = (SCRIPTS / script).read_text()
        assert "ONSITE_PORT = 9630" in source
        target = cwd / script
        target.write_text(source.replace("ONSITE_PORT = 9630", f"ONSITE_PORT = {self.port}", 1))
        return subprocess.run(
            [sys.executable, str(target)], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
        )

    def record(self, rid: int) -> dict[str, object]:
        record = self.sandbox.store.get(str(rid))
        assert record is not None
        return record


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    sandbox = OnSiteSandbox(seed=3)
    port = free_port()
    config = uvicorn.Config(sandbox.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, name="onsite-sandbox", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    srv = Server(sandbox, port)
    yield srv
    srv.control.close()
    uv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The scripts read '../images/sample-photo.jpg' and 'images/sample-photo.jpg'."""
    cwd = tmp_path / "work"
    for folder in (tmp_path / "images", cwd / "images"):
        folder.mkdir(parents=True)
    (tmp_path / "images" / "sample-photo.jpg").write_bytes(PHOTO)
    (cwd / "images" / "sample-photo.jpg").write_bytes(NEW_PHOTO)
    return cwd


def ok(result: subprocess.CompletedProcess[str], server: Server) -> str:
    assert result.returncode == 0, result.stderr
    assert server.sandbox.open_sessions() == 0  # every script logged out
    assert server.sandbox.lock_owners() == {}
    return result.stdout


def test_list_customers(server: Server, workdir: Path) -> None:
    server.seed(14)
    out = ok(server.run("list_customers.py", workdir), server)
    assert 'total_count="14"' in out
    assert out.count("<customer ") == 10  # count=10&offset=0
    assert "<company>Modeling Agency Ltd.</company>" in out


def test_create_customer(server: Server, workdir: Path) -> None:
    server.seed(14)
    out = ok(server.run("create_customer.py", workdir), server)
    assert 'customer id="15"' in out
    assert "<customer_id>C-15</customer_id>" in out
    record = server.record(15)
    assert (record["first"], record["last"]) == ("Jane", "Smith")
    assert record["phone_numbers"][0] == {  # type: ignore[index]
        "id": 1,
        "main": True,
        "type": "home",
        "list_order": 1,
        "number": "613-555-5555",
    }


def test_get_customer(server: Server, workdir: Path) -> None:
    server.seed(15)
    out = ok(server.run("get_customer.py", workdir), server)
    assert "<first>Jane</first>" in out
    assert "<modified>" in out
    assert "<customer_id>C-15</customer_id>" in out


def test_update_customer(server: Server, workdir: Path) -> None:
    server.seed(15)
    before = server.record(15)
    out = ok(server.run("update_customer.py", workdir), server)
    after = server.record(15)
    # The seed's address as its (web-scraped) page shows it, no-break space included.
    assert after["email"] == "[email\xa0protected]"
    assert after["homepage"] == "www.example.com"
    assert after["first"] == "Jane"  # sparse PUT: the rest stays
    assert str(after["modified"]) > str(before["modified"])
    assert "<homepage>www.example.com</homepage>" in out


def test_add_customer_photo(server: Server, workdir: Path) -> None:
    server.seed(15)
    out = ok(server.run("add_customer_photo.py", workdir), server)
    assert f'uri="http://127.0.0.1:{server.port}/api/customers/12/customer_photo/"' in out
    assert server.sandbox.photos[12][0] == PHOTO


def test_update_customer_photo(server: Server, workdir: Path) -> None:
    server.seed(15)
    server.sandbox.set_photo(12, PHOTO)
    out = ok(server.run("update_customer_photo.py", workdir), server)
    assert "Photo updated." in out
    assert server.sandbox.photos[12][0] == NEW_PHOTO


def test_get_customer_photo(server: Server, workdir: Path) -> None:
    server.seed(15)
    server.sandbox.set_photo(15, PHOTO)
    out = ok(server.run("get_customer_photo.py", workdir), server)
    assert "Downloaded customer-photo.jpg" in out
    assert (workdir / "customer-photo.jpg").read_bytes() == PHOTO


def test_search_columns_filters(server: Server, workdir: Path) -> None:
    server.seed(1)
    out = ok(server.run("search_columns_filters.py", workdir), server)
    assert 'filter id="lsserver.search.filters.modified_date"' in out
    assert 'column id="lsserver.search.column.name"' in out


def test_search_by_name(server: Server, workdir: Path) -> None:
    server.seed(15)
    out = ok(server.run("search_by_name.py", workdir), server)
    assert "<total_count>1</total_count>" in out
    assert "<value>Jane Smith</value>" in out
    assert "<value>613-555-5555</value>" in out
    assert 'customer id="15"' in out
