#!/usr/bin/env bash
# A tour of the sandbox from the shell, against `imgate serve` (sandbox mode):
# a fault, a send that survives it, the stats and a page of the delivery log.
#   examples/shell/sandbox_tour.sh [SANDBOX_HOST:PORT]     (default localhost:50052)
set -euo pipefail
sandbox=${1:-localhost:50052}
imgate=${IMGATE:-imgate}

curl -fsS -X POST "$sandbox/sandbox/reset" > /dev/null
# The next two Tencent calls are refused with HTTP 502: the gateway retries them.
curl -fsS -X PUT "$sandbox/sandbox/faults" -d '{"tencent": [{"kind": "refuse_502", "times": 2}]}'
echo
"$imgate" send --backend tencent --to bob,carol,ghost1 --text "hello through two 502s"
curl -fsS "$sandbox/sandbox/stats?vendor=tencent"
echo
curl -fsS "$sandbox/sandbox/deliveries?vendor=tencent&limit=10"
echo
