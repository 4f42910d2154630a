"""A batch from submit to its last outcome: batches, dispatch, sink, retry, planning."""
