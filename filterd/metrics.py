"""Prometheus metrics. Every name starts with `filterd_`; the endpoint is started by the daemon or supervisor."""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
)

from filterd.hostport import format_address, split_hostport

log = logging.getLogger(__name__)

# Score buckets are finer near both ends, where the thresholds live.
_SCORE_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

MESSAGES = Counter(
    "filterd_messages", "Messages handled, by front-end and action taken", ["frontend", "action"]
)  # frontend: smtp | milter | spamd
# action: verdict.Action (ham | tagged | rejected | skipped | not_mail | unscored | tempfail |
# relay_failed | too_big)
PIPELINE_ERRORS = Counter(
    "filterd_pipeline_errors", "Messages the text pipeline failed on (scored from <broken> tokens)"
)
SCORE = Histogram("filterd_score", "Spam probability of scored messages", buckets=_SCORE_BUCKETS)
SCORING_SECONDS = Histogram(
    "filterd_scoring_seconds", "Time to score one message (prepare + batched inference)",
    buckets=_LATENCY_BUCKETS,
)
RELAY_SECONDS = Histogram(
    "filterd_relay_seconds", "Time to hand one message to the next hop", buckets=_LATENCY_BUCKETS
)
BATCH_SIZE = Histogram(
    "filterd_batch_size", "Messages per onnxruntime call", buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)
LESSONS = Counter(
    "filterd_lessons", "Lessons asked for (spamd TELL), by what came of them", ["result"]
)  # result: learned | already_learned | forgotten | not_learned | failed
NEXT_HOP_ERRORS = Counter(
    "filterd_next_hop_errors", "Next-hop failures, by kind", ["kind"]
)  # kind: connect | timeout | tempfail | permfail | protocol
NEXT_HOP_OPEN = Gauge(
    "filterd_next_hop_connections", "Open connections to the next hop, in use or idle",
    multiprocess_mode="livesum",
)
NEXT_HOP_IDLE = Gauge(
    "filterd_next_hop_idle_connections", "Next-hop connections idle in the pool",
    multiprocess_mode="livesum",
)
IN_FLIGHT = Gauge("filterd_sessions_in_flight", "Open SMTP sessions", multiprocess_mode="livesum")
MODEL = Info("filterd_model", "The model being served")
RELOADS = Counter("filterd_reloads", "Config/model reloads, by result", ["result"])  # ok | failed


def serve(address: str | None, registry: CollectorRegistry = REGISTRY) -> Callable[[], None]:
    """Start the HTTP endpoint (a thread) at "host:port"; returns its stop function.

    A metrics endpoint that cannot listen is logged and left off: mail keeps flowing.
    """
    if address is None:
        return lambda: None
    host, port = split_hostport(address)
    try:
        server, thread = start_http_server(port, host, registry=registry)
    except OSError as exc:
        log.error("metrics endpoint off: cannot listen on %s: %s", address, exc)
        return lambda: None
    log.info("metrics on http://%s/metrics", format_address(server.server_address))

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
