#!/usr/bin/env bash
# The gateway from grpcurl (https://github.com/fullstorydev/grpcurl), through server
# reflection (served as grpc.reflection.v1 and v1alpha). grpcurl is a Go binary that
# this project's CI cannot fetch (no Go module proxy, not packaged in Debian 12), so CI runs
# the same calls through reflection from Python (tests/test_reflection.py) instead.
#   examples/shell/grpcurl.sh [HOST:PORT]        (default 127.0.0.1:50051)
set -euo pipefail
target=${1:-127.0.0.1:50051}
command -v grpcurl > /dev/null || { echo "grpcurl is not installed" >&2; exit 0; }

grpcurl -plaintext "$target" list
grpcurl -plaintext "$target" describe imgate.v1.GatewayService
grpcurl -plaintext "$target" grpc.health.v1.Health/Check
grpcurl -plaintext "$target" imgate.v1.GatewayService/ListBackends
grpcurl -plaintext -d '{"recipient_ids": ["bob", "ghost1"], "message": {"text": {"text": "hi"}}}' \
    "$target" imgate.v1.GatewayService/BatchSend
