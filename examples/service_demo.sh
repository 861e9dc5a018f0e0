#!/usr/bin/env bash
# `make demo`: the whole service on one machine with the embedded defaults (SQLite under
# ./var/, a local Ray started by the driver, the bundled C4 sample): start `magma-bench up`,
# submit the `demo` preset, follow it live, print the best configuration and the
# dashboard URL. On a terminal the service then stays up until Ctrl-C.
set -euo pipefail

BIN=${BIN:-.venv/bin}
PORT=${MAGMA_PORT:-8000}
export MAGMA_URL="http://127.0.0.1:${PORT}"
mkdir -p var

if "$BIN/python" -c "import httpx, sys; httpx.get('${MAGMA_URL}/api/v1/health', timeout=1)" 2>/dev/null; then
    echo "something already answers on ${MAGMA_URL}; set MAGMA_PORT to another port" >&2
    exit 1
fi

"$BIN/magma-bench" up --port "$PORT" > var/demo-up.log 2>&1 &
UP=$!
# SIGTERM: a background job of a script ignores SIGINT
stop() { kill -TERM "$UP" 2>/dev/null || true; wait "$UP" 2>/dev/null || true; }
trap stop EXIT

echo "starting the API, the driver and a local Ray (log: var/demo-up.log) ..."
for _ in $(seq 1 240); do
    if "$BIN/python" -c "import httpx; httpx.get('${MAGMA_URL}/api/v1/health', timeout=1).raise_for_status()" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$UP" 2>/dev/null; then
        echo "magma-bench up exited:" >&2; tail -20 var/demo-up.log >&2; exit 1
    fi
    sleep 0.5
done

"$BIN/magma-bench" submit --preset demo --wait | tee var/demo-submit.log
STUDY=$(awk '{print $2; exit}' var/demo-submit.log)
echo
echo "best configuration (magma-bench export ${STUDY} --format yaml):"
"$BIN/magma-bench" export "$STUDY" --format yaml
echo
echo "as Python (magma-bench export ${STUDY} --format python):"
"$BIN/magma-bench" export "$STUDY" --format python
echo
echo "dashboards: ${MAGMA_URL}/studies/${STUDY}/dashboard/overview"
echo "API docs:   ${MAGMA_URL}/docs"
if [ -t 0 ]; then
    echo "the service stays up; Ctrl-C stops it"
    wait "$UP"
fi
