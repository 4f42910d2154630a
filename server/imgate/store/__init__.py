"""Where batches, recipients, chunks and outcomes live: the interface and its stores."""
