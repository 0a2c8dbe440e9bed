#!/usr/bin/env bash
# The test command: install into ./.venv, check types and lint, run the whole suite.
# Needs Postgres, Redis and RabbitMQ on loopback (scripts/services.sh starts them).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'

bash scripts/services.sh
bash scripts/install_browser.sh  # Debian's Chromium for the ops page test (never a browser download)

echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy --strict"; .venv/bin/mypy
# Two processes, one test module each at a time (module-scoped stacks stay whole): most of
# the suite waits on real processes, sockets and clocks, so two overlap well on two cores
# (three starve each other's real processes: tests then time out, not fail). Tests that
# measure elapsed time against a budget run afterwards, alone, so that they measure the
# bridge and not their neighbours.
pytest=(.venv/bin/python -m pytest -q -p no:cacheprovider)
echo "== pytest"; "${pytest[@]}" -n 2 --dist loadscope --durations=30 -m "not timing" "$@"
echo "== pytest (timing, alone)"
"${pytest[@]}" -m timing "$@" || [ $? -eq 5 ]  # 5: nothing of that kind was selected
