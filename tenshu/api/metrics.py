"""/metrics in Prometheus text format, and the access log (one line per request).

Counters and histograms are updated once per request (never per token); gauges for queue depth,
KV cache use and prefix-cache hits are read from the backends when Prometheus scrapes, and
energy (jobs/energy.py's counters, where the machine has them) from the meter and the job
scheduler then too.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from tenshu.jobs.energy import EnergyMeter

disable_created_metrics()  # the _created series only add noise to a scrape
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """meter: the machine's energy counters (default: RAPL where readable)."""

    def __init__(self, meter: EnergyMeter | None = None):
        self.registry = CollectorRegistry()
        self.requests = Counter("tenshu_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.request_seconds = Histogram(
            "tenshu_request_duration_seconds", "Time until the response started (headers sent)",
            ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.tokens = Counter("tenshu_tokens", "Tokens read (prompt) and written (completion)",
                              ["model", "direction"], registry=self.registry)
        self.ttft = Histogram("tenshu_time_to_first_token_seconds", "Time to first token",
                              ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.per_token = Histogram(
            "tenshu_time_per_output_token_seconds", "Mean time between output tokens, per request",
            ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.gateway = None
        self.scheduler = None  # the job scheduler, for the energy its jobs used
        self.engine_tokens = 0  # output tokens of the embedded engine's models, since start
        self.registry.register(_Energy(self, meter or EnergyMeter.open()))

    def attach(self, gateway) -> None:
        """Read live gauges from this gateway's backends at scrape time."""
        self.gateway = gateway
        self.registry.register(_LiveGauges(gateway))

    def attach_scheduler(self, scheduler) -> None:
        """Count the energy this job scheduler's runs used (jobs/scheduler.py's `joules`)."""
        self.scheduler = scheduler

    # -- the gateway's Observer ---------------------------------------------------------------

    def request_done(self, model, usage_in, usage_out, cached, ttft_s, per_token_s) -> None:
        self.tokens.labels(model, "in").inc(usage_in)
        self.tokens.labels(model, "out").inc(usage_out)
        if self._embedded(model):
            self.engine_tokens += usage_out
        if ttft_s is not None:
            self.ttft.labels(model).observe(ttft_s)
        if per_token_s is not None:
            self.per_token.labels(model).observe(per_token_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def _embedded(self, model: str) -> bool:
        group = self.gateway.router.deployments.get(model) if self.gateway else None
        return bool(group) and group[0].spec.backend == "embedded"


class _Energy:
    """Joules: those the job scheduler's runs used, and the CPU's per 1,000 tokens the engine
    generated between the last two scrapes (the package's whole energy in that time, whatever
    used it, and no GPU's). Absent where the machine has no readable counter, and the second
    where the engine generated nothing, or the meter lost count, between the scrapes."""

    def __init__(self, metrics: Metrics, meter: EnergyMeter):
        self.metrics = metrics
        self.meter = meter
        self.last = None  # (reading, engine tokens) at the previous scrape

    def collect(self):
        scheduler = self.metrics.scheduler
        if scheduler is not None and scheduler.joules:
            jobs = CounterMetricFamily(
                "tenshu_job_energy_joules", "CPU package energy (RAPL) used while each job's "
                "runs ran, since the server started", labels=["job"])
            for name, joules in scheduler.joules.items():
                jobs.add_metric([name], joules)
            yield jobs
        if (reading := self.meter.read()) is None:
            return
        tokens, last = self.metrics.engine_tokens, self.last
        self.last = (reading, tokens)
        if last is None or tokens <= last[1] or (used := reading.since(last[0])) is None:
            return
        per_1k = GaugeMetricFamily(
            "tenshu_engine_joules_per_1k_tokens", "CPU package energy (RAPL) between the last "
            "two scrapes per 1,000 tokens the embedded engine generated in that time")
        per_1k.add_metric([], used / (tokens - last[1]) * 1000)
        yield per_1k


class _LiveGauges:
    def __init__(self, gateway):
        self.gateway = gateway

    def collect(self):
        queue = GaugeMetricFamily("tenshu_queue_depth", "Requests waiting for an engine")
        queue.add_metric([], self.gateway.queue_depth())
        running = GaugeMetricFamily("tenshu_running_requests", "Sequences running, per model",
                                    labels=["model"])
        kv = GaugeMetricFamily("tenshu_kv_cache_usage_ratio", "Fraction of KV blocks in use",
                               labels=["model"])
        hits = GaugeMetricFamily("tenshu_prefix_cache_hit_rate",
                                 "Prompt tokens served from the prefix cache / prompt tokens",
                                 labels=["model"])
        for name, backend in self.gateway.backends.items():
            stats = backend.stats()
            running.add_metric([name], stats.running)
            kv.add_metric([name], stats.kv_cache_usage)
            seen, cached = backend.prefix_cache_counts()
            hits.add_metric([name], cached / seen if seen else 0.0)
        yield from (queue, running, kv, hits)


# One line per request, at INFO, once it has ended: uvicorn's own access log writes its line when
# the headers go out, so a stream would be logged before it ran, without its duration. The path
# is logged without its query string, and no header is: nothing of the API key reaches the log.
access_log = logging.getLogger("tenshu.access")


class MetricsMiddleware:
    """Counts every request by its route template (not its raw path) and status, and logs it
    when it ends (a stream when its last chunk is sent), with what served it."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status, served = 500, b""  # 500: the app failed before it answered (uvicorn says so)

        async def observed_send(message):
            nonlocal status, served
            if message["type"] == "http.response.start":
                status = message["status"]
                route = scope.get("route")
                label = getattr(route, "path", None) or "unmatched"
                self.metrics.requests.labels(label, str(status)).inc()
                self.metrics.request_seconds.labels(label).observe(time.perf_counter() - start)
                served = b"".join(b" %s=%s" % (name.removeprefix(b"x-tenshu-"), value)
                                  for name, value in message.get("headers", ())
                                  if name in _SERVED)
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                access_log.info(
                    '%s - "%s %s HTTP/%s" %d %.1f ms %s%s',
                    f"{client[0]}:{client[1]}" if client else "-", scope["method"],
                    scope["path"], scope.get("http_version", "1.1"), status,
                    (time.perf_counter() - start) * 1000,
                    scope.get("state", {}).get("request_id", "-"), served.decode("latin-1"))


_SERVED = (b"x-tenshu-route", b"x-tenshu-backend")  # what served a model request (router/trace)
