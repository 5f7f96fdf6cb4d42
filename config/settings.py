"""All configuration, in one pydantic-settings class read once at start and passed down.

Environment: `FINSENTRY_*` for everything, plus the usual `DATABASE_URL` and `KAFKA_BOOTSTRAP_SERVERS`.
Leaving those two unset means "start embedded servers" (Tansu broker, embedded Postgres).
Each field's docstring is its documentation: `finsentry config` prints the reference in README.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "default"


@dataclass(frozen=True)
class Horizons:
    """How many days each kind of stored data is kept after publication (0: kept for ever).

    Messages and texts live in day partitions that are dropped whole; a day's partition goes once the
    whole day is older than its horizon plus `DROP_MARGIN`. Validation refuses a message older than the
    message horizon (`oldest_message`), so a partition that could still receive a message that passed
    validation is never dropped, as long as a batch is written within `DROP_MARGIN` of its validation.
    Texts are never kept longer than their message. Minute trend windows are deleted by time."""

    messages_days: int = 0
    texts_days: int = 0
    minute_windows_days: int = 0

    DROP_MARGIN = timedelta(days=1)

    @property
    def effective_texts_days(self) -> int:
        """Texts go with their message at the latest."""
        if self.messages_days and (not self.texts_days or self.texts_days > self.messages_days):
            return self.messages_days
        return self.texts_days

    def oldest_message(self, now: datetime) -> datetime | None:
        """The oldest publication time a message may have to be accepted (None: no limit)."""
        return now - timedelta(days=self.messages_days) if self.messages_days else None

    def oldest_text(self, now: datetime) -> datetime | None:
        """The oldest publication time whose text is stored (None: no limit)."""
        days = self.effective_texts_days
        return now - timedelta(days=days) if days else None

    def oldest_minute_window(self, now: datetime) -> datetime | None:
        return now - timedelta(days=self.minute_windows_days) if self.minute_windows_days else None


@dataclass(frozen=True)
class TargetPolicy:
    """Which webhook targets are allowed beyond public https ones (tests and the demo's local receiver)."""

    allow_http: bool = False
    allow_private: bool = False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FINSENTRY_", frozen=True, extra="ignore", use_attribute_docstrings=True
    )

    database_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "FINSENTRY_DATABASE_URL")
    )
    """Postgres URL (`postgresql://user:pass@host:5432/db`); unset starts the embedded Postgres."""
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "FINSENTRY_KAFKA_BOOTSTRAP_SERVERS"),
    )
    """Broker list; unset starts the embedded Tansu broker (memory storage)."""
    data_dir: Path = Field(default_factory=lambda: platformdirs.user_data_path("finsentry"))
    """Where the embedded Postgres, the broker log and trained models live."""

    news_topic: str = "finsentry.news"
    """Kafka topic of news articles."""
    social_topic: str = "finsentry.social"
    """Kafka topic of social posts."""
    dead_letter_topic: str = "finsentry.dead-letter"
    """Where rejected records go, with the stage and reason."""
    topic_partitions: int = 4
    """Partitions for topics finsentry creates; more partitions allow more workers."""
    consumer_group: str = "finsentry-worker"
    """The workers' consumer group."""

    micro_batch_size: int = 2048
    """Most records taken from Kafka at once (the latency batch)."""
    micro_batch_timeout_s: float = 0.2
    """Longest wait for a micro-batch to fill."""
    forward_batch_size: int = 0
    """The model's forward batch (device memory); 0 picks the device's best: 32 on a CPU, 1024 on a GPU."""
    pipeline_depth: int = 2
    """Micro-batches queued between two stages (decode+tokenise, inference, write): the overlap bound."""

    model_dir: Path = DEFAULT_MODEL_DIR
    """Model folder served when the registry has no champion."""
    device: str = "auto"
    """`auto`, `cpu` or `cuda`."""
    precision: str = "auto"
    """`auto` (fp16 on a GPU, fp32 on a CPU), `fp32`, `fp16`, `bf16` or `int8` (CPU: faster, changes labels)."""

    trend_series: str = "live"
    """Trend version written; the demo and backfills write their own, which the analysts' views leave out."""
    window_seconds: int = 60
    """Trend window, by event time (`published_at`); it divides an hour (the hourly and daily roll-ups)."""
    allowed_lateness_s: int = 120
    """How long a window stays open for late messages before the detector reads it."""

    spike_min_volume: int = 20
    """Smallest window the detector reads."""
    spike_warmup_windows: int = 10
    """Windows learned before a key can alert."""
    spike_alpha: float = 0.1
    """EWMA weight of a new window in the baseline."""
    spike_ratio: float = 2.0
    """The shift the CUSUM is tuned to find: negative share = ratio x baseline."""
    spike_threshold: float = 6.0
    """CUSUM decision level (log-likelihood units)."""
    spike_cooldown_windows: int = 5
    """Windows after an episode before the key can alert again."""
    spike_overrides: dict[str, dict[str, float]] = Field(default_factory=dict)
    """Per dimension or key, e.g. `{"ticker": {"min_volume": 30}, "topic:Macro": {"threshold": 9}}`."""
    spike_dimensions: list[str] = ["topic", "ticker"]
    """What the detector watches."""
    spike_author_cap: int = 3
    """Stories an author counts for in one window of one key; a story counts once (detection only)."""
    coordination_min_excess: int = 30
    """Messages beyond a window's effective count, above the key's usual excess, that make it coordinated ..."""
    coordination_excess_ratio: float = 0.2
    """... and that excess as a share of the key's usual effective volume."""
    detect_interval_s: float = 1.0
    """Seconds between the detector's sweeps of keys whose windows closed, and between delivery passes."""
    touched_topic: str = "finsentry.windows"
    """Workers publish a "window touched" event here per (dimension, key, window) a batch wrote; the detector reads it."""
    alerts_topic: str = "finsentry.alerts"
    """Every alert event (opened, resolved) is published here as JSON too; empty turns it off."""
    detector_app_id: str = "finsentry-detector"
    """The faust detector's application id (its consumer group and table topics)."""
    detector_session_timeout_s: float = 10.0
    """The faust detector's broker session timeout."""
    watermark_idle_s: float = 120.0
    """An input partition with no committed batch for this long stops holding the watermark back."""

    webhook_urls: str = ""
    """Comma-separated receiver URLs that get every alert."""
    webhook_routes: list[dict[str, Any]] = Field(default_factory=list)
    """JSON list of `{"url", "topics", "tickers", "min_severity"}`: receivers of what matches."""
    webhook_secrets: SecretStr = SecretStr("whsec_ZGV2ZWxvcG1lbnQtb25seS1zZWNyZXQ=")
    """Comma-separated `whsec_` secrets; every message is signed with each (rotation). Set your own."""
    webhook_allow_http: bool = False
    """Allow http:// webhook URLs (development only; production receivers use https)."""
    webhook_allow_private: bool = False
    """Allow loopback, private and link-local webhook addresses (development, or receivers on a private network)."""
    webhook_timeout_s: float = 5.0
    """HTTP timeout of one delivery attempt."""
    webhook_max_attempts: int = 12
    """Attempts before a delivery is marked failed (backoff from 30 s doubles, 1 h at most: about 6 h)."""
    webhook_backoff_s: float = 30.0
    """First retry delay."""

    metrics_port: int = 9108
    """The worker's /metrics, /healthz and /readyz; 0 picks a free port, -1 turns them off."""
    detector_metrics_port: int = 9107
    """The detector's /metrics, /healthz and /readyz; 0 picks a free port, -1 turns them off."""
    log_format: str = "text"
    """`text` or `json`."""

    retrain_interval_minutes: int = 24 * 60
    """How often the scheduler re-fine-tunes."""
    retrain_epochs: float = 3.0
    """Epochs of a scheduled re-fine-tune."""
    retrain_max_examples_per_task: int | None = None
    """Cap on training examples per task (small machines, tests)."""
    retrain_cron: str | None = None
    """A crontab line (`0 3 * * *`) for re-fine-tuning; when set it replaces the interval."""
    retrain_init: str = "champion"
    """Where a re-fine-tune starts: `champion` (warm start), `base` (MiniLM) or a model folder."""
    model_poll_s: float = 30.0
    """Workers re-read the registry this often, besides listening for promotions (LISTEN/NOTIFY)."""
    message_retention_days: int = 90
    """Stored messages are kept this many days after publication (their day's partition is dropped 1-2 days after that); a message older than this is dead-lettered, since it could no longer be recognised as a replay. 0 keeps them."""
    text_retention_days: int = 30
    """Stored texts, links and authors are kept this many days after publication (partitions dropped 1-2 days after; trends are kept); 0 keeps them as long as their message."""
    minute_trend_retention_days: int = 30
    """Minute trend windows are kept this many days; the hourly and daily roll-ups are kept for ever. 0 keeps them."""
    drift_check_minutes: int = 60
    """How often the scheduler compares the champion's recent predictions with its first ones."""
    drift_window: int = 2000
    """Messages in the reference and in the recent sample of a drift check."""
    drift_max_js: float = 0.05
    """Jensen-Shannon divergence (base 2) of topic or sentiment shares above which the stream has drifted."""
    drift_max_confidence_drop: float = 0.05
    """Fall in mean topic confidence above which the stream has drifted."""

    @field_validator("window_seconds")
    @classmethod
    def _window_divides_an_hour(cls, value: int) -> int:
        if value <= 0 or 3600 % value:
            raise ValueError("the trend window must divide an hour (60, 300, 900, 3600, ...)")
        return value

    @field_validator("message_retention_days", "text_retention_days", "minute_trend_retention_days")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("a retention period is 0 (keep) or a number of days")
        return value

    @property
    def horizons(self) -> Horizons:
        return Horizons(self.message_retention_days, self.text_retention_days, self.minute_trend_retention_days)

    @property
    def webhook_url_list(self) -> list[str]:
        return [u.strip() for u in self.webhook_urls.split(",") if u.strip()]

    @property
    def webhook_secret_list(self) -> list[str]:
        return [s.strip() for s in self.webhook_secrets.get_secret_value().split(",") if s.strip()]

    @property
    def webhook_policy(self) -> TargetPolicy:
        return TargetPolicy(allow_http=self.webhook_allow_http, allow_private=self.webhook_allow_private)

    @property
    def input_topics(self) -> list[str]:
        return [self.news_topic, self.social_topic]


def env_name(name: str) -> str:
    return {"database_url": "DATABASE_URL", "kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS"}.get(
        name, f"FINSENTRY_{name.upper()}"
    )


def reference_markdown() -> str:
    """The configuration reference, generated from the class so that it cannot drift."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        if name == "data_dir":
            default = "`~/.local/share/finsentry`"
        elif field.default_factory is not None:
            default = f"`{field.get_default(call_default_factory=True)}`"
        elif isinstance(field.default, SecretStr):
            default = "a development secret"
        elif field.default is None:
            default = "unset"
        elif isinstance(field.default, Path):
            default = "`models/default`"
        else:
            default = f"`{field.default}`"
        rows.append(f"| `{env_name(name)}` | {default} | {field.description or ''} |")
    return "\n".join(rows) + "\n"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
