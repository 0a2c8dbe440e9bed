"""Run one POS sandbox as a subprocess, configured like the demo's (`for_demo`), and write
the adapter settings that point at it to a JSON file so the parent can wire the bridge."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import uvicorn

from bridge.adapters import registry


def main() -> None:
    system, port, webhook_url, env_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    cls = registry.available()[system]
    sandbox = registry.load_object(cls.sandbox_class or "").for_demo(webhook_url)
    env = sandbox.adapter_env(f"http://127.0.0.1:{port}")
    tmp = env_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(env))
    tmp.replace(env_file)
    uvicorn.run(sandbox.app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
