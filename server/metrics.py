"""Prometheus metrics of the gateway, on a registry of its own.

Names follow Prometheus conventions (base units, ``_total``, ``_seconds``) and every series
carries ``model``; label values come from closed sets (outcomes, stages, S-codes) so
cardinality stays bounded.

With several workers (``PROMETHEUS_MULTIPROC_DIR`` set before the worker starts, as
``server.workers`` does), each process writes its values to files there and ``/metrics``
merges them (prometheus-client's multiprocess mode): counters and histograms sum across workers,
the in-flight gauge sums the live workers (``livesum``); ``_created`` series are not exported.
"""

from __future__ import annotations

import os
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

from guard.detectors.base import TierCheck
from guard.events import ImageMeta

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
OUTCOMES = ("ok", "blocked", "steered", "flagged", "client_error", "upstream_error", "cancelled")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "thoughtguard_requests", "Chat completion requests by outcome", ["model", "outcome"], registry=r
        )
        self.in_flight = Gauge("thoughtguard_requests_in_flight", "Requests being served", ["model"], registry=r,
                               multiprocess_mode="livesum")
        self.decisions = Counter(
            "thoughtguard_guard_decisions",
            "Guard decisions that blocked, steered or flagged",
            ["model", "stage", "category", "action"],
            registry=r,
        )
        self.ttft = Histogram(
            "thoughtguard_time_to_first_token_seconds",
            "Time to the first released reasoning or answer token, as the client sees it",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttfat = Histogram(
            "thoughtguard_time_to_first_answer_token_seconds",
            "Time to the first released answer token",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "thoughtguard_inter_token_latency_seconds",
            "Gap between consecutive text chunks sent to a streaming client",
            ["model"],
            buckets=FAST_BUCKETS + (2.5, 5),
            registry=r,
        )
        self.upstream_connect = Histogram(
            "thoughtguard_upstream_connect_seconds",
            "Time until the upstream answered with response headers",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.detection_position = Histogram(
            "thoughtguard_detection_position_tokens",
            "Generated tokens seen when a block or steer fired",
            ["model", "stage"],
            buckets=(4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192),
            registry=r,
        )
        self.fail_activations = Counter(
            "thoughtguard_guard_fail_activations",
            "Detector failures resolved by the policy's failure mode",
            ["model", "mode"],
            registry=r,
        )
        self.e2e = Histogram(
            "thoughtguard_e2e_request_latency_seconds",
            "Request latency from arrival to the last byte",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.holdback = Histogram(
            "thoughtguard_holdback_delay_seconds",
            "How long verified text waited in the guard before release (per token)",
            ["model"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.check = Histogram(
            "thoughtguard_guard_check_duration_seconds",
            "Duration of one guard check by detector tier (a cascade's fast and slow tiers apart)",
            ["model", "detector"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.leaked = Counter(
            "thoughtguard_live_leaked_tokens", "Tokens forwarded unchecked in live mode that a block then covered",
            ["model"], registry=r,
        )
        self.wary = Counter(
            "thoughtguard_wary_streams",
            "Streams held back until wholly checked: the request read as harmful, or a window read doubtful",
            ["model"], registry=r,
        )
        self.saved = Counter(
            "thoughtguard_upstream_tokens_saved",
            "Upstream tokens not generated because a block aborted the request early (max_tokens minus generated)",
            ["model"],
            registry=r,
        )
        self.detector_errors = Counter(
            "thoughtguard_guard_errors", "Detector errors and timeouts by detector tier", ["model", "detector"], registry=r
        )
        self.images = Counter("thoughtguard_images", "Images accepted", ["model", "format"], registry=r)
        self.image_bytes = Counter("thoughtguard_image_bytes", "Encoded bytes of accepted images", ["model"], registry=r)
        self.image_rejections = Counter(
            "thoughtguard_image_rejections", "Images refused, by reason", ["model", "reason"], registry=r
        )

        # what /metrics shows: this registry, or every worker's merged
        self.exposition = merged_registry() or self.registry

    def close(self) -> None:
        """A worker that stops drops its live gauges (its counters stay in the merged totals)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            multiprocess.mark_process_dead(os.getpid())

    def observe_tiers(self, model: str, tiers: Iterable[TierCheck]) -> None:
        """Each tier of each check under its own ``detector`` label (tier names: configured detectors)."""
        for t in tiers:
            self.check.labels(model, t.tier).observe(t.seconds)
            if t.failed:
                self.detector_errors.labels(model, t.tier).inc()

    def observe_images(self, model: str, images: list[ImageMeta]) -> None:
        for meta in images:
            self.images.labels(model, meta.format).inc()
            self.image_bytes.labels(model).inc(meta.bytes)


def merged_registry() -> CollectorRegistry | None:
    """All workers' metrics, merged from the multiprocess directory; None with one process."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return None
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return registry
