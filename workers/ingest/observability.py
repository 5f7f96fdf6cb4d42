"""The worker's Prometheus series; `workers/observability.py` serves them with /healthz and /readyz.

Metrics are fed from the worker's BatchReport hook and a lag probe, so the hot path does no extra
per-message work for them.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from workers.ingest.worker import BatchReport
from workers.observability import SECONDS


class WorkerMetrics:
    """The worker's Prometheus series, in a registry of its own."""

    def __init__(self, model_version: str, device: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.consumed = Counter("finsentry_messages_consumed", "Records consumed from Kafka", registry=r)
        self.classified = Counter("finsentry_messages_classified", "New messages stored", registry=r)
        self.duplicates = Counter("finsentry_messages_duplicate", "Records already stored (replays)", registry=r)
        self.dead_lettered = Counter("finsentry_messages_dead_lettered", "Records sent to the DLQ", registry=r)
        self.batch_size = Histogram("finsentry_batch_size", "Records per micro-batch", registry=r,
                                    buckets=(1, 8, 32, 128, 512, 1024, 2048, 4096, 8192))
        self.step_seconds = Histogram("finsentry_step_seconds", "Seconds per batch step", ["step"], registry=r,
                                      buckets=SECONDS)
        self.inference_seconds = Histogram("finsentry_inference_seconds", "Model seconds per micro-batch",
                                           registry=r, buckets=SECONDS)
        self.e2e_seconds = Histogram("finsentry_end_to_end_seconds", "Produce to offset commit, per record",
                                     registry=r, buckets=SECONDS)
        self.lag = Gauge("finsentry_consumer_lag", "Records behind the fetch high watermark", registry=r)
        self.model = Gauge("finsentry_model_info", "The model serving", ["version", "device"], registry=r)
        self.gpu_memory = Gauge("finsentry_gpu_memory_bytes", "GPU memory allocated by torch", registry=r)
        self.last_batch = Gauge("finsentry_last_batch_timestamp", "Unix time of the last committed batch",
                                registry=r)
        self.model.labels(version=model_version, device=device).set(1)
        self._model_labels = (model_version, device)

    def on_batch(self, report: BatchReport) -> None:
        if report.model_version and report.model_version != self._model_labels[0]:  # a hot swap
            self.model.remove(*self._model_labels)
            self._model_labels = (report.model_version, self._model_labels[1])
            self.model.labels(*self._model_labels).set(1)
        self.consumed.inc(report.records)
        self.classified.inc(report.stored)
        self.duplicates.inc(report.records - report.dead_lettered - report.stored)
        self.dead_lettered.inc(report.dead_lettered)
        self.batch_size.observe(report.records)
        for step, seconds in report.seconds.items():
            self.step_seconds.labels(step=step).observe(seconds)
        self.inference_seconds.observe(report.seconds["inference"])
        for produced_ms in report.produced_at_ms:
            self.e2e_seconds.observe(max(0.0, report.committed_at - produced_ms / 1000))
        self.last_batch.set(report.committed_at)
        self._gpu_memory()

    def _gpu_memory(self) -> None:
        import torch

        if torch.cuda.is_available():
            self.gpu_memory.set(torch.cuda.memory_allocated())

    def render(self) -> bytes:
        return generate_latest(self.registry)
