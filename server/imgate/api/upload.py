"""UploadRecipients: a recipient list streamed page by page into the store.

Pages go to the store as they come: the gateway holds one page, never the list. A bad
page fails the upload and the store forgets everything it had received.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterable, Callable

from imgate.api.callers import current_caller
from imgate.api.errors import ApiError, invalid
from imgate.api.requests import widest as widest_of
from imgate.api.validate import longest_by_unit, recipient_violations, validate_request_id
from imgate.observability.logs import set_log_context
from imgate.store.base import Store
from imgate.store.records import ListRow
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.spec import IdRule, IdUnit
from imgate.vendors.base.translator import FieldViolation

log = logging.getLogger("imgate.servicer")


async def upload_recipients(
    store: Store,
    pages: AsyncIterable[pb.UploadRecipientsRequest],
    limit: int,
    clock: Callable[[], float],
) -> pb.RecipientList:
    """Store the pages as one list of unique ids (at most `limit`) of the current caller;
    raises ApiError (INVALID_ARGUMENT) having kept nothing."""
    caller = current_caller.get()
    row = ListRow(uuid.uuid4().hex, caller.name, clock())
    digest = hashlib.sha256()
    widest, widest_bytes = "", -1
    longest: dict[str, list[int]] = {}  # unit name -> [length, index]
    await store.create_list(row)
    kept = False

    def reject(problems: list[FieldViolation]) -> ApiError:
        return invalid(problems)  # the list is forgotten below, before the caller hears

    try:
        page_number = -1
        async for page in pages:
            page_number += 1
            problems: list[FieldViolation] = []
            if page_number == 0:
                row.request_id = page.request_id
                problems += validate_request_id(page.request_id)
            elif page.request_id and page.request_id != row.request_id:
                problems.append(
                    FieldViolation(f"pages[{page_number}].request_id", "first message only")
                )
            ids = list(page.recipient_ids)
            problems += recipient_violations(ids, f"pages[{page_number}].recipient_ids")
            if problems:
                raise reject(problems)
            row.count += await store.add_to_list(row.list_id, ids)
            if row.count > limit:
                raise reject(
                    [
                        FieldViolation(
                            f"pages[{page_number}].recipient_ids",
                            f"over {limit} unique recipients; at most"
                            f" {limit} per list (max_recipients_per_list)",
                        )
                    ]
                )
            digest.update("\n".join(ids).encode())
            digest.update(b"\n")  # no id holds a control character: an unambiguous join
            for unit, at in longest_by_unit(ids).items():
                length = IdRule(0, IdUnit[unit]).length(ids[at])
                if length > longest.get(unit, [-1])[0]:  # the first of equals keeps it
                    longest[unit] = [length, row.received + at]
            page_widest, page_widest_bytes, position = widest_of(ids)
            if page_widest_bytes > widest_bytes:  # the first of equals keeps its place
                widest, widest_bytes = page_widest, page_widest_bytes
                row.widest_index = row.received + position
            row.received += len(ids)
        if row.count == 0:
            raise reject([FieldViolation("recipient_ids", "at least one recipient is required")])
        row.widest_id, row.fingerprint = widest, digest.digest()
        row.longest = json.dumps(longest, sort_keys=True)
        row.ready_time = clock()
        finished, created = await store.finish_list(row)
        kept = True
        if not created and finished.fingerprint != row.fingerprint:
            raise reject(
                [FieldViolation("request_id", "already used for a different recipient list")]
            )
        set_log_context(request_id=finished.request_id, caller=caller.name)
        if created:
            log.info(
                "recipient list of %d recipients (%d duplicates removed)",
                finished.count,
                finished.duplicates_removed,
            )
        return pb.RecipientList(
            recipient_list=finished.list_id,
            count=finished.count,
            duplicates_removed=finished.duplicates_removed,
        )
    finally:
        if not kept:
            await store.delete_list(row.list_id)
