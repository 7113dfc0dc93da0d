#!/usr/bin/env bash
# The test command: make the Python virtualenv with the third-party test clients (tests/py/requirements.txt),
# start a throwaway PostgreSQL for the store suites when the server binaries are installed, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! .venv/bin/python -c 'import http_message_signatures, prometheus_client, requests' 2>/dev/null; then
  echo "test.sh: creating .venv with the third-party test clients"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/py/requirements.txt
fi
export KEYWARD_TEST_PYTHON="$PWD/.venv/bin/python"

pg_started=""
if [ -z "${KEYWARD_TEST_PG_URL:-}" ] && [ -f scripts/pg-test.sh ]; then
  if env_out=$(bash scripts/pg-test.sh start); then
    eval "$env_out"
    pg_started=1
    trap 'bash scripts/pg-test.sh stop >/dev/null 2>&1 || true' EXIT
  else
    echo "test.sh: no PostgreSQL server available; PostgreSQL suites will skip (they fail under CI)"
  fi
fi

cargo test --locked "$@"
