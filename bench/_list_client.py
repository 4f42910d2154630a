"""Stage 13's client: one audience through UploadRecipients + SubmitBatch + WatchBatch.

    python -m bench._list_client --target HOST:PORT --recipients N [--backend tencent]

Ids are generated as the upload asks for them (never held as a list) and outcomes are
counted, not kept, as a caller sending to its whole user base would do with
`imgate_client`. Prints one line of JSON: upload_s, first_outcome_s (from the SubmitBatch
call to the first outcome watched), total_s, outcomes, the summary's counts and this
process's peak RSS (`VmHWM`, MiB) at the end.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator

from bench._workload import SENDER, TEXT
from imgate_client import GatewayClient, text


def _ids(count: int) -> Iterator[str]:
    for number in range(count):
        yield f"u{number:07d}"


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--recipients", type=int, required=True)
    parser.add_argument("--backend", default="tencent")
    args = parser.parse_args()
    with GatewayClient(args.target) as client:
        started = time.perf_counter()
        uploaded = client.upload_recipients(_ids(args.recipients), timeout=600)
        upload_s = time.perf_counter() - started
        submitted = time.perf_counter()
        batch = client.submit_batch(
            uploaded, text(TEXT), backend=args.backend, sender_id=SENDER, timeout=60
        )
        first_outcome_s = None
        outcomes = 0
        with client.watch_batch(batch.batch_id, timeout=900) as stream:
            for _ in stream:
                if first_outcome_s is None:
                    first_outcome_s = time.perf_counter() - submitted
                outcomes += 1
            summary = stream.summary
        total_s = time.perf_counter() - started
    print(
        json.dumps(
            {
                "recipients": args.recipients,
                "listed": uploaded.count,
                "upload_s": upload_s,
                "first_outcome_s": first_outcome_s,
                "total_s": total_s,
                "outcomes": outcomes,
                "accepted": summary.accepted,
                "total": summary.total,
                "peak_rss_mb": _peak_rss_mb(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
