"""Everything between "a message arrived" and "the answer is posted": the queue, the
pipeline, per-thread memory and ordering, idempotency. Knows no chat platform SDK."""
