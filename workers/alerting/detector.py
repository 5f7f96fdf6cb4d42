"""Spike detection over closed trend windows, one key at a time; writes alerts with their outbox rows.

`step_key` is the unit of work: under a per-key transaction-level advisory lock it reads the key's
state (`spike_state`, with the last window it stepped), steps the CUSUM through the key's closed windows
after that one, and commits the alerts, their outbox rows and the advanced state together. Whoever calls
it, each window of each key is stepped once: a crash loses none and repeats none, and a repeated or lost
"window touched" event changes nothing. The faust detector (`faust_detector.py`) calls it for the keys
its partitions own; `run_detection` calls it for every key with closed windows (tests, tools).

A window is closed when every input partition that is still active has written a later window and the
allowed lateness has passed (`closed_before`), so a replay that runs one partition ahead of another does
not close windows early.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.dialects.postgresql import insert

from config.settings import Settings
from schemas.tables import (
    alert_deliveries,
    alerts,
    classified_messages,
    message_texts,
    spike_state,
    trend_windows,
    webhook_endpoints,
)
from workers.alerting.diversity import CoordinationParams
from workers.alerting.routing import Route, recipients
from workers.alerting.spikes import Point, SpikeEvent, SpikeParams, SpikeState, step

KAFKA_PREFIX = "kafka:"  # an outbox row whose endpoint is "kafka:<topic>" is published to that topic


def spike_params(settings: Settings) -> SpikeParams:
    return SpikeParams(
        alpha=settings.spike_alpha, ratio=settings.spike_ratio, threshold=settings.spike_threshold,
        min_volume=settings.spike_min_volume, warmup_windows=settings.spike_warmup_windows,
        cooldown_windows=settings.spike_cooldown_windows,
    )


def author_cap(settings: Settings) -> int:
    return settings.spike_author_cap


def coordination_params(settings: Settings) -> CoordinationParams:
    return CoordinationParams(min_excess=settings.coordination_min_excess,
                              excess_ratio=settings.coordination_excess_ratio, alpha=settings.spike_alpha)


def params_for(base: SpikeParams, overrides: dict[str, dict[str, Any]], dimension: str, key: str) -> SpikeParams:
    """Base parameters, then the dimension's overrides, then the key's ("topic:Macro")."""
    params = base
    for name in (dimension, f"{dimension}:{key}"):
        if name in overrides:
            params = replace(params, **overrides[name])
    return params


def closed_before(conn: Connection, series: str, dimension: str, allowed_lateness_s: int,
                  idle_s: float) -> datetime | None:
    """Windows that start before this are closed. Event time has reached the oldest of the active input
    partitions' newest windows (a partition idle for idle_s no longer holds it back; when all are idle,
    the newest); with no recorded progress (trends written by hand or a backfill), the newest window."""
    reached = conn.execute(text(
        "SELECT coalesce(min(window_start) FILTER (WHERE updated_at > now() - make_interval(secs => :idle)), "
        "max(window_start)) FROM ingest_progress WHERE series = :series"), {"series": series, "idle": idle_s}
    ).scalar()
    if reached is None:
        reached = conn.execute(select(func.max(trend_windows.c.window_start)).where(
            trend_windows.c.series == series, trend_windows.c.dimension == dimension)).scalar()
    return None if reached is None else reached - timedelta(seconds=allowed_lateness_s)


def closed_by_dimension(conn: Connection, series: str, dimensions: tuple[str, ...] | list[str],
                        allowed_lateness_s: int, idle_s: float) -> dict[str, datetime]:
    """`closed_before` of each dimension that has windows."""
    return {d: c for d in dimensions if (c := closed_before(conn, series, d, allowed_lateness_s, idle_s)) is not None}


@dataclass(frozen=True)
class Detection:
    """What step_key needs besides the key: the parameters and where alerts go."""

    params: SpikeParams
    window_seconds: int
    routes: list[Route]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts_topic: str = ""  # also publish every alert event there (through the outbox); "" turns it off


def step_key(conn: Connection, detection: Detection, series: str, dimension: str, key: str,
             closed: datetime) -> tuple[list[int], datetime | None]:
    """Step one key through its closed windows not stepped yet, in the caller's transaction; return the
    ids of alerts opened or resolved, and the last window stepped (None: nothing new)."""
    conn.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(f"{series}|{dimension}|{key}", 0))))
    row = conn.execute(select(spike_state.c.state, spike_state.c.last_window_start).where(
        spike_state.c.series == series, spike_state.c.dimension == dimension, spike_state.c.key == key)).first()
    state, last = (SpikeState.from_json(row.state), row.last_window_start) if row else (SpikeState(), None)
    tw = trend_windows
    query = select(tw.c.window_start, tw.c.n_messages, tw.c.n_negative).where(
        tw.c.series == series, tw.c.dimension == dimension, tw.c.key == key, tw.c.window_start < closed)
    if last is not None:
        query = query.where(tw.c.window_start > last)
    points = [Point(r.window_start, int(r.n_messages), int(r.n_negative))
              for r in conn.execute(query.order_by(tw.c.window_start))]
    if not points:
        return [], None
    key_params = params_for(detection.params, detection.overrides, dimension, key)
    touched: list[int] = []
    for point in points:
        state, event = step(state, point, key_params)
        if event is not None:
            alert_id = _record_event(conn, detection, series, dimension, key, event)
            if alert_id is not None:
                touched.append(alert_id)
    last = points[-1].window_start
    conn.execute(
        insert(spike_state)
        .values(series=series, dimension=dimension, key=key, state=asdict(state), last_window_start=last)
        .on_conflict_do_update(index_elements=["series", "dimension", "key"],
                               set_={"state": asdict(state), "last_window_start": last, "updated_at": func.now()})
    )
    return touched, last


def pending_keys(conn: Connection, series: str, dimensions: tuple[str, ...], closed: dict[str, datetime],
                 since: dict[str, datetime] | None = None) -> list[tuple[str, str]]:
    """(dimension, key) with closed windows not stepped yet; with `since`, only among the windows that start
    from since[dimension] on (the ones that closed since the last look: a range on the window index)."""
    found: list[tuple[str, str]] = []
    for dimension in dimensions:
        if dimension not in closed:
            continue
        rows = conn.execute(text(
            "SELECT DISTINCT tw.key FROM trend_windows tw LEFT JOIN spike_state ss "
            "ON ss.series = tw.series AND ss.dimension = tw.dimension AND ss.key = tw.key "
            "WHERE tw.series = :series AND tw.dimension = :dimension AND tw.window_start < :closed "
            "AND tw.window_start >= coalesce(CAST(:since AS timestamptz), '-infinity') "
            "AND (ss.last_window_start IS NULL OR tw.window_start > ss.last_window_start) ORDER BY 1"),
            {"series": series, "dimension": dimension, "closed": closed[dimension],
             "since": (since or {}).get(dimension)})
        found += [(dimension, str(r.key)) for r in rows]
    return found


def run_detection(
    engine: Engine,
    params: SpikeParams,
    allowed_lateness_s: int,
    window_seconds: int,
    routes: list[Route],
    series: str = "live",
    dimensions: tuple[str, ...] = ("topic",),
    overrides: dict[str, dict[str, Any]] | None = None,
    alerts_topic: str = "",
    idle_s: float = 120.0,
) -> list[int]:
    """Step every key with closed windows, each in its own transaction; return ids of alerts opened or
    resolved."""
    detection = Detection(params, window_seconds, routes, overrides or {}, alerts_topic)
    with engine.connect() as conn:
        closed = closed_by_dimension(conn, series, dimensions, allowed_lateness_s, idle_s)
        keys = pending_keys(conn, series, dimensions, closed)
    touched: list[int] = []
    for dimension, key in keys:
        with engine.begin() as conn:
            touched += step_key(conn, detection, series, dimension, key, closed[dimension])[0]
    return touched


def _record_event(
    conn: Connection, detection: Detection, series: str, dimension: str, key: str, event: SpikeEvent,
) -> int | None:
    """The alert row and one outbox row per receiver (and the alerts topic), all with one event id.
    None: this episode's alert is already recorded (its unique key: series, dimension, key, window)."""
    if event.kind == "opened":
        payload = _opened_payload(conn, series, dimension, key, event, detection.window_seconds)
        alert_id = conn.execute(
            insert(alerts)
            .values(series=series, dimension=dimension, key=key, window_start=event.window_start, status="open",
                    severity=event.severity, observed_share=event.observed_share,
                    baseline_share=event.baseline_share, baseline_std=event.baseline_std,
                    volume=event.volume, payload=payload)
            .on_conflict_do_nothing(constraint="uq_alerts_key_window")
            .returning(alerts.c.id)
        ).scalar()
        if alert_id is None:
            return None
        payload["alert_id"] = alert_id
        severity = event.severity
    else:
        opened = conn.execute(
            select(alerts.c.id, alerts.c.severity).where(
                alerts.c.series == series, alerts.c.dimension == dimension, alerts.c.key == key,
                alerts.c.status == "open").order_by(alerts.c.id.desc()).limit(1)
        ).first()
        if opened is None:
            return None
        alert_id, severity = int(opened.id), str(opened.severity)
        conn.execute(alerts.update().where(alerts.c.id == alert_id).values(
            status="resolved", resolved_at=func.now(), resolved_window_start=event.window_start))
        payload = {"type": "alert.resolved", "alert_id": alert_id, "series": series, "dimension": dimension,
                   "key": key, "window_start": event.window_start.isoformat(),
                   "observed_negative_share": round(event.observed_share, 4),
                   "baseline_negative_share": round(event.baseline_share, 4), "volume": event.volume}
    disabled: set[str] = set(conn.execute(select(webhook_endpoints.c.url)).scalars())
    event_id = f"msg_{uuid.uuid4().hex}"  # the webhook-id of every receiver, and the alerts topic's event id
    urls = recipients(detection.routes, dimension, key, severity)  # a resolve goes where its alert went
    urls += [KAFKA_PREFIX + detection.alerts_topic] if detection.alerts_topic else []
    for url in urls:
        conn.execute(insert(alert_deliveries).values(
            alert_id=alert_id, event=payload["type"], endpoint_url=url, webhook_id=event_id, payload=payload,
            status="disabled" if url in disabled else "pending"))
    return int(alert_id)


def _opened_payload(
    conn: Connection, series: str, dimension: str, key: str, event: SpikeEvent, window_seconds: int
) -> dict[str, Any]:
    """What a risk analyst needs to judge the alert: the window, baseline vs observed, the worst texts."""
    cm, mt = classified_messages, message_texts
    about = cm.c.topic == key if dimension == "topic" else cm.c.tickers.contains([key]) if dimension == "ticker" \
        else cm.c.source == key
    end = event.window_start + timedelta(seconds=window_seconds)
    worst = conn.execute(  # an inner join: a text past its retention has no row
        select(mt.c.text, cm.c.source, mt.c.url, cm.c.sentiment_score)
        .join(mt, (mt.c.message_key == cm.c.message_key) & (mt.c.published_at == cm.c.published_at))
        .where(about, cm.c.window_start == event.window_start,
               # the window's messages were published within it: this reads one day's partitions
               cm.c.published_at >= event.window_start, cm.c.published_at < end,
               mt.c.published_at >= event.window_start, mt.c.published_at < end)
        .order_by(cm.c.sentiment_score).limit(3)
    ).all()
    return json.loads(json.dumps({
        "type": "alert.opened",
        "series": series,
        "dimension": dimension,
        "key": key,
        "window_start": event.window_start.isoformat(),
        "window_end": end.isoformat(),
        "severity": event.severity,
        "observed_negative_share": round(event.observed_share, 4),
        "baseline_negative_share": round(event.baseline_share, 4),
        "baseline_std": round(event.baseline_std, 4),
        "volume": event.volume,
        "evidence_llr": round(event.evidence, 2),
        "top_negative": [{"text": str(r.text)[:280], "source": r.source, "url": r.url,
                          "sentiment_score": round(float(r.sentiment_score), 3)} for r in worst],
    }))
