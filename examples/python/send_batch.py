"""Send one text message to many recipients and print one line per outcome.

.venv/bin/python examples/python/send_batch.py 127.0.0.1:50051 bob,carol,ghost1,bob
"""

from __future__ import annotations

import sys

from imgate_client import GatewayClient, InvalidRequestError, reason_name, state_name, text


def main(target: str, recipients: list[str]) -> int:
    with GatewayClient(target) as client:
        try:
            result = client.batch_send(
                recipients, text("hello from Python"), backend="tencent", timeout=60
            ).collect()
        except InvalidRequestError as error:  # nothing was sent
            for field, description in error.violations:
                print(f"{field}: {description}", file=sys.stderr)
            return 2
    for outcome in result.outcomes:
        reason = f"  {reason_name(outcome.reason)}" if outcome.reason else ""
        print(f"{outcome.recipient_id}  {state_name(outcome.state)}{reason}")
    print(f"total={result.summary.total} accepted={result.summary.accepted}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2].split(",")))
