"""The store's vocabulary for a batch's life after submit (CONTRACT §9), on every store:
scheduled batches wait SCHEDULED until the scheduler promotes them, and a recall batch is
made from its original's outcome pages."""

from __future__ import annotations

import dataclasses

import pytest

from imgate.store.base import Store
from imgate.store.records import DONE, PLANNED, RECIPIENT_PAGE, ChunkRow, Counts, RecallKey
from imgate.v1 import gateway_pb2 as pb
from tests.test_store import MakeStore, _row, make_store, store

__all__ = ["make_store", "store"]  # the shared suite's fixtures, over every store kind

ACCEPTED, FAILED, UNSURE = (
    pb.DELIVERY_STATE_ACCEPTED,
    pb.DELIVERY_STATE_FAILED,
    pb.DELIVERY_STATE_UNCERTAIN,
)


async def test_a_scheduled_batch_waits_until_promoted(store: Store) -> None:
    row = dataclasses.replace(_row("s1"), state=pb.BATCH_STATE_SCHEDULED, send_after=2000.0)
    stored, _ = await store.create_batch(row, ["a", "b", "c"], None, owner="me")
    assert (stored.state, stored.send_after) == (pb.BATCH_STATE_SCHEDULED, 2000.0)
    await store.create_batch(
        dataclasses.replace(_row("s2"), state=pb.BATCH_STATE_SCHEDULED, send_after=3000.0),
        ["a"],
        None,
        owner="me",
    )
    assert await store.next_scheduled("me") == 2000.0
    assert await store.claim_queued("tx", "", "me", 5) == []  # never taken while scheduled
    assert await store.queued_count("tx") == 0
    assert await store.promote_due("me", 1999.0) == []
    assert await store.promote_due("me", 2000.0) == [("tx", "")]
    assert await store.next_scheduled("me") == 3000.0
    (claimed,) = await store.claim_queued("tx", "", "me", 5)
    assert (claimed.batch_id, claimed.state) == ("s1", pb.BATCH_STATE_RUNNING)
    assert [r.batch_id for r in await store.unfinished_batches()] == ["s1", "s2"]


async def test_a_callers_queued_batches_are_claimed_oldest_first_up_to_a_limit(
    store: Store,
) -> None:
    # Created out of order: the claim's order is create_time's, then batch_id's.
    for batch_id, caller, create_time in [
        ("q3", "a", 1003.0),
        ("q1", "a", 1001.0),
        ("q2b", "a", 1002.0),
        ("q2a", "a", 1002.0),
        ("q0", "b", 1000.0),
    ]:
        row = _row(batch_id, total=1, caller=caller, create_time=create_time)
        await store.create_batch(
            dataclasses.replace(row, state=pb.BATCH_STATE_QUEUED), ["r"], None, owner="me"
        )
    claimed = await store.claim_queued("tx", "a", "me", 3)
    assert [(r.batch_id, r.state) for r in claimed] == [
        ("q1", pb.BATCH_STATE_RUNNING),
        ("q2a", pb.BATCH_STATE_RUNNING),
        ("q2b", pb.BATCH_STATE_RUNNING),
    ]
    assert await store.claim_queued("other-backend", "a", "me", 3) == []
    assert [r.batch_id for r in await store.claim_queued("tx", "a", "me", 3)] == ["q3"]
    assert await store.claim_queued("tx", "a", "me", 3) == []  # taken once only
    assert await store.queued_callers("tx", "me") == {"b"}
    assert await store.queued_count("tx") == 1
    stored = await store.get_batch("q2a")
    assert stored is not None
    assert stored.state == pb.BATCH_STATE_RUNNING


async def test_a_cancelled_scheduled_batch_is_never_promoted(store: Store) -> None:
    row = dataclasses.replace(_row("s1"), state=pb.BATCH_STATE_SCHEDULED, send_after=2000.0)
    await store.create_batch(row, ["a"], None, owner="me")
    cancelling = await store.set_state("s1", pb.BATCH_STATE_CANCELLING)
    assert cancelling is not None
    assert cancelling.state == pb.BATCH_STATE_CANCELLING
    assert await store.promote_due("me", 5000.0) == []
    assert await store.next_scheduled("me") is None
    assert [r.batch_id for r in await store.cancelling("me", 10)] == ["s1"]


async def test_scheduled_batches_outlive_a_restart_as_they_are(make_store: MakeStore) -> None:
    first = make_store()
    await first.open()
    row = dataclasses.replace(_row("s1"), state=pb.BATCH_STATE_SCHEDULED, send_after=2000.0)
    await first.create_batch(row, ["a"], None, owner="dead")
    if first.shared:
        await first.heartbeat("dead")
        await first.retire("dead")
    await first.close()
    second = make_store()
    await second.open()
    try:
        if second.shared:
            adopted, _ = await second.adopt("heir", lease_s=3600.0)
            assert adopted == 1  # an adopter takes the dead replica's scheduled batches too
        else:
            await second.recover("heir")
        again = await second.get_batch("s1")
        assert again is not None
        assert (again.state, again.send_after) == (pb.BATCH_STATE_SCHEDULED, 2000.0)
        assert await second.next_scheduled("heir") == 2000.0
    finally:
        await second.close()


def _outcomes(states: list[tuple[str, int, pb.DeliveryState.ValueType, str, int]]) -> bytes:
    response = pb.BatchSendResponse()
    for recipient, index, state, message_id, time_ms in states:
        outcome = response.outcomes.add(recipient_id=recipient, index=index, state=state)
        outcome.vendor_message_id = message_id
        outcome.vendor_time_ms = time_ms
    return response.SerializeToString()


async def _ended_original(store: Store) -> None:
    """Batch "o" of 6: chunk 0 [c, d] recorded first, then chunk 1 [a, b, e, f]."""
    await store.create_batch(_row("o", total=6), list("abcdef"), [10, 11, 12, 13, 14, 15])
    second = ChunkRow("o", 0, 0, 2, PLANNED, attempts=1)
    await store.write_ahead(second, "me")
    first = ChunkRow("o", 1, 2, 6, PLANNED, attempts=1)
    page = _outcomes(
        [
            ("c", 12, ACCEPTED, "m-c", 7),
            ("d", 13, FAILED, "", 0),
            ("e", 14, UNSURE, "", 0),
            ("f", 15, ACCEPTED, "", 8),  # accepted, but no message id was asked for
        ]
    )
    await store.record(first, DONE, page, Counts(accepted=2, failed=1, uncertain=1), "me")
    page = _outcomes([("a", 10, ACCEPTED, "m-a", 5), ("b", 11, ACCEPTED, "m-b", 6)])
    await store.record_last(second, DONE, page, Counts(accepted=2), "me")


async def test_a_recall_batch_holds_the_originals_accepted_and_uncertain(store: Store) -> None:
    await _ended_original(store)
    recall = dataclasses.replace(_row("r", total=0), recall_of="o")
    stored, created = await store.create_recall(recall, "o", owner="me")
    assert created
    assert (stored.recall_of, stored.total, stored.pending, stored.state) == (
        "o",
        5,
        5,
        pb.BATCH_STATE_QUEUED,
    )
    # In the order the original's outcomes were recorded, each keeping its index.
    assert await store.read_recipients("r", 0, 5) == (
        ["c", "e", "f", "a", "b"],
        [12, 14, 15, 10, 11],
    )
    assert await store.read_recall_keys("r", 1, 4) == [
        RecallKey(UNSURE, "", 0),
        RecallKey(ACCEPTED, "", 8),
        RecallKey(ACCEPTED, "m-a", 5),
    ]
    original = await store.get_batch("o")
    assert original is not None
    assert original.recalled_by == "r"
    # A second recall of it is the first one; nothing more is stored.
    again, created = await store.create_recall(dataclasses.replace(recall, batch_id="r2"), "o")
    assert (again.batch_id, created) == ("r", False)
    assert await store.get_batch("r2") is None


async def test_a_recall_request_id_already_used_returns_that_batch(store: Store) -> None:
    await _ended_original(store)
    await store.create_batch(_row("x", request_id="k"), ["a"], None)
    recall = dataclasses.replace(_row("r", total=0, request_id="k"), recall_of="o")
    found, created = await store.create_recall(recall, "o")
    assert (found.batch_id, created) == ("x", False)
    original = await store.get_batch("o")
    assert original is not None
    assert original.recalled_by == ""


async def test_only_an_ended_batch_is_recalled(store: Store) -> None:
    await store.create_batch(_row("o"), ["a", "b", "c"], None)
    with pytest.raises(ValueError, match="has not ended"):
        await store.create_recall(dataclasses.replace(_row("r"), recall_of="o"), "o")
    assert await store.get_batch("r") is None
    with pytest.raises(LookupError):
        await store.create_recall(dataclasses.replace(_row("r"), recall_of="nope"), "nope")


async def test_a_recall_of_many_pages_reads_back_across_page_boundaries(store: Store) -> None:
    count = RECIPIENT_PAGE + 700
    ids = [f"u{n}" for n in range(count)]
    await store.create_batch(_row("o", total=count), ids, None)
    for number, start in enumerate(range(0, count, 500)):
        chunk = ChunkRow("o", number, start, min(count, start + 500), PLANNED, attempts=1)
        page = _outcomes([(ids[n], n, ACCEPTED, f"m{n}", n) for n in range(chunk.start, chunk.end)])
        counts = Counts(accepted=chunk.end - chunk.start)
        if chunk.end == count:
            await store.record_last(chunk, DONE, page, counts, "me")
        else:
            await store.record(chunk, DONE, page, counts, "me")
    stored, _ = await store.create_recall(dataclasses.replace(_row("r"), recall_of="o"), "o")
    assert stored.total == count
    edge = RECIPIENT_PAGE
    got = await store.read_recipients("r", edge - 2, edge + 2)
    assert got == (ids[edge - 2 : edge + 2], list(range(edge - 2, edge + 2)))
    keys = await store.read_recall_keys("r", edge - 2, edge + 2)
    assert [k.message_id for k in keys] == [f"m{n}" for n in range(edge - 2, edge + 2)]
