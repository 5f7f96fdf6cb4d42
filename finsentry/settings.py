"""All configuration, in one pydantic-settings class read once at start and passed down.

Environment: `FINSENTRY_*` for everything, plus the usual `DATABASE_URL` and `KAFKA_BOOTSTRAP_SERVERS`.
Leaving those two unset means "start embedded servers" (Tansu broker, embedded Postgres).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "default"



class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FINSENTRY_", frozen=True, extra="ignore")

    # Connections. None means: start the embedded server.
    database_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "FINSENTRY_DATABASE_URL")
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "FINSENTRY_KAFKA_BOOTSTRAP_SERVERS"),
    )
    data_dir: Path = Field(default_factory=lambda: platformdirs.user_data_path("finsentry"))

    # Topics and consumer group.
    news_topic: str = "finsentry.news"
    social_topic: str = "finsentry.social"
    dead_letter_topic: str = "finsentry.dead-letter"
    topic_partitions: int = 4
    consumer_group: str = "finsentry-worker"

    # Batching: the Kafka micro-batch bounds latency; the forward batch bounds device memory.
    micro_batch_size: int = 2048
    micro_batch_timeout_s: float = 0.2
    forward_batch_size: int = 0  # 0: the device's best (32 on a CPU, 1024 on a GPU; see `finsentry bench`)

    # Model.
    model_dir: Path = DEFAULT_MODEL_DIR
    device: str = "auto"  # "auto", "cpu" or "cuda"
    precision: str = "auto"  # "auto" (fp16 on a GPU, int8 on a CPU), "fp32", "fp16", "bf16" or "int8"

    # Trends and spikes. `trend_series` names the trend version written ("live" in production; the
    # demo and backfills write their own series, which the analysts' views leave out).
    trend_series: str = "live"
    window_seconds: int = 60
    allowed_lateness_s: int = 120
    # Spike detection (binomial CUSUM, see workers/spikes.py). `spike_overrides` adjusts them per
    # dimension or key, e.g. {"ticker": {"min_volume": 30}, "topic:Macro": {"threshold": 9}}.
    spike_min_volume: int = 20
    spike_warmup_windows: int = 10
    spike_alpha: float = 0.1
    spike_ratio: float = 2.0
    spike_threshold: float = 6.0
    spike_cooldown_windows: int = 5
    spike_overrides: dict[str, dict[str, float]] = Field(default_factory=dict)
    spike_dimensions: list[str] = ["topic", "ticker"]
    detect_interval_s: float = 1.0

    # Webhooks. `webhook_urls` receive every alert; `webhook_routes` receive what matches, e.g.
    # [{"url": "https://risk.example/hook", "topics": ["Macro"], "tickers": ["AAPL"], "min_severity": "medium"}].
    # `webhook_secrets`: comma-separated whsec_ secrets; each message is signed with all of them, so
    # a new secret can be added before the old one is removed (rotation).
    webhook_urls: str = ""
    webhook_routes: list[dict[str, Any]] = Field(default_factory=list)
    webhook_secrets: SecretStr = SecretStr("whsec_ZGV2ZWxvcG1lbnQtb25seS1zZWNyZXQ=")
    webhook_timeout_s: float = 5.0
    # Backoff doubles from 30 s, capped at 1 h a wait, with jitter: 12 attempts span about 6 hours.
    webhook_max_attempts: int = 12
    webhook_backoff_s: float = 30.0

    # Operations.
    metrics_port: int = 9108  # the worker's /metrics, /healthz and /readyz; -1 turns them off
    log_format: str = "text"  # "text" or "json"

    # Scheduled re-fine-tuning.
    retrain_interval_minutes: int = 24 * 60
    retrain_epochs: float = 3.0
    retrain_max_examples_per_task: int | None = None

    @property
    def webhook_url_list(self) -> list[str]:
        return [u.strip() for u in self.webhook_urls.split(",") if u.strip()]

    @property
    def webhook_secret_list(self) -> list[str]:
        return [s.strip() for s in self.webhook_secrets.get_secret_value().split(",") if s.strip()]

    @property
    def input_topics(self) -> list[str]:
        return [self.news_topic, self.social_topic]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
