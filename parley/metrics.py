"""Prometheus metrics of the ingress and the workers (deploy/grafana and deploy/prometheus
read these names). The ingress serves them on GET /metrics of its HTTP port; each worker
process on PARLEY_METRICS_PORT. Labels carry platform, channel and kind ids only, never text.
"""

from __future__ import annotations

import re

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

# Latency buckets from a fast first token (0.05 s) to a long answer (5 min).
_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

EVENTS_RECEIVED = Counter(
    "parley_events_received", "Messages handed to the queue intake", ["platform"]
)
EVENTS_DEDUPLICATED = Counter(
    "parley_events_deduplicated", "Deliveries dropped as repeats of a queued message", ["platform"]
)
EVENTS_ENQUEUED = Counter("parley_events_enqueued", "Messages queued for a worker", ["platform"])
QUEUE_DEPTH = Gauge("parley_queue_depth", "Messages waiting in the broker queue")
QUEUE_WAIT = Histogram(
    "parley_queue_wait_seconds", "From acknowledgement to a worker starting on it", buckets=_SECONDS
)
TIME_TO_FIRST_TOKEN = Histogram(
    "parley_time_to_first_token_seconds",
    "From asking the model to its first text",
    buckets=_SECONDS,
)
GENERATION = Histogram(
    "parley_generation_seconds", "One answer's generation, retries included", buckets=_SECONDS
)
TOKENS = Counter("parley_tokens_generated", "Tokens of finished answers", ["platform", "channel"])
ANSWERS = Counter("parley_answers", "Messages finished, by outcome", ["platform", "outcome"])
ERRORS = Counter("parley_errors", "Errors while answering, by kind", ["kind"])
IN_FLIGHT = Gauge("parley_generations_in_flight", "Generations streaming right now")
REDACTIONS = Counter("parley_redactions", "Personal values replaced, by type", ["entity"])
MODEL_UP = Gauge("parley_model_up", "1 when the model server answered its last check")


def error_kind(exc: BaseException) -> str:
    """ModelOverloaded -> model_overloaded: a bounded set of label values."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
