"""/metrics of the ingress and of a worker after a real conversation, as Prometheus reads
them (the names deploy/grafana and deploy/prometheus use)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from parley.metrics import error_kind
from tests.fakes.slack_api import FakeSlack
from tests.fakes.tgi import FakeTGI
from tests.support import slack_events as ev
from tests.support.processes import free_port
from tests.support.service import ParleyService, parley_env, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_the_ingress_and_the_workers_expose_the_dashboards_series(
    redis_url: str, fake_tgi: FakeTGI, fake_slack: FakeSlack, tmp_path: Path
) -> None:
    worker_port = free_port()
    env = parley_env(
        redis_url=redis_url,
        tgi_url=fake_tgi.url,
        slack_api_url=fake_slack.url,
        PARLEY_METRICS_PORT=str(worker_port),
    )
    svc = ParleyService(env, tmp_path)
    try:
        svc.start_serve()
        svc.start_worker()
        fake_tgi.fail_next("500")
        mention = ev.mention("reset the VPN for bob@acme.com please", channel="C0METRICS")
        assert svc.deliver(mention)[0] == 200
        assert svc.deliver(mention)[0] == 200  # Slack's retry: deduplicated
        wait_until(
            lambda: (
                bool(fake_slack.thread_replies("C0METRICS", mention["ts"]))
                and not fake_slack.open_streams()
            ),
            20,
            "the answer",
            svc.logs,
        )
        ingress = _scrape(f"{svc.url}/metrics")
        assert _value(ingress, "parley_events_received_total", platform="slack") == 2
        assert _value(ingress, "parley_events_deduplicated_total", platform="slack") == 1
        assert _value(ingress, "parley_events_enqueued_total", platform="slack") == 1
        assert ("parley_queue_depth", frozenset()) in ingress
        assert _value(ingress, "parley_model_up") == 1

        url = f"http://127.0.0.1:{worker_port}/metrics"
        wait_until(
            lambda: (
                _value(_scrape(url), "parley_answers_total", platform="slack", outcome="answered")
                == 1
            ),
            10,
            "the answer counted",
        )
        worker = _scrape(url)
        assert _value(worker, "parley_time_to_first_token_seconds_count") == 1
        assert _value(worker, "parley_generation_seconds_count") == 1
        assert _value(worker, "parley_queue_wait_seconds_count") == 1
        tokens = _value(
            worker, "parley_tokens_generated_total", platform="slack", channel="C0METRICS"
        )
        assert tokens > 0
        assert _value(worker, "parley_redactions_total", entity="EMAIL_ADDRESS") == 1
        assert _value(worker, "parley_errors_total", kind="model_unavailable") == 1
        assert _value(worker, "parley_generations_in_flight") == 0
        assert _value(worker, "parley_model_up") == 1
    finally:
        svc.stop()


def test_error_kinds_are_snake_case_class_names() -> None:
    class ModelOverloaded(Exception):
        pass

    assert error_kind(ModelOverloaded()) == "model_overloaded"
    assert error_kind(TimeoutError()) == "timeout_error"
