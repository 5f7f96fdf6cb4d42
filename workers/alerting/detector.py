"""Runs spike detection over closed trend windows, and writes alerts with their outbox rows.

One owner decides: the whole pass holds a transaction-level advisory lock, so however many workers
call it, each window of each key is stepped once, and the alert, its delivery rows and the advanced
detector state commit together (a crash loses none and repeats none).
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from dataclasses import asdict, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.dialects.postgresql import insert

from schemas.tables import (
    alert_deliveries,
    alerts,
    classified_messages,
    spike_state,
    trend_windows,
    webhook_endpoints,
)
from workers.alerting.routing import Route, recipients
from workers.alerting.spikes import Point, SpikeEvent, SpikeParams, SpikeState, step

DETECTOR_LOCK = 7_310_001  # pg advisory lock key for the detection pass


def params_for(base: SpikeParams, overrides: dict[str, dict[str, Any]], dimension: str, key: str) -> SpikeParams:
    """Base parameters, then the dimension's overrides, then the key's ("topic:Macro")."""
    params = base
    for name in (dimension, f"{dimension}:{key}"):
        if name in overrides:
            params = replace(params, **overrides[name])
    return params


def run_detection(
    engine: Engine,
    params: SpikeParams,
    allowed_lateness_s: int,
    window_seconds: int,
    routes: list[Route],
    series: str = "live",
    dimensions: tuple[str, ...] = ("topic",),
    overrides: dict[str, dict[str, Any]] | None = None,
) -> list[int]:
    """One pass: step every key through its closed windows; return ids of alerts opened or resolved."""
    touched: list[int] = []
    with engine.begin() as conn:
        if not conn.execute(select(func.pg_try_advisory_xact_lock(DETECTOR_LOCK))).scalar():
            return touched
        for dimension in dimensions:
            touched += _detect(conn, params, overrides or {}, allowed_lateness_s, window_seconds, routes,
                               series, dimension)
    return touched


def _detect(
    conn: Connection, params: SpikeParams, overrides: dict[str, dict[str, Any]], allowed_lateness_s: int,
    window_seconds: int, routes: list[Route], series: str, dimension: str,
) -> list[int]:
    tw = trend_windows
    newest = conn.execute(
        select(func.max(tw.c.window_start)).where(tw.c.series == series, tw.c.dimension == dimension)
    ).scalar()
    if newest is None:
        return []
    # Event-time watermark: windows older than the newest minus the allowed lateness are closed.
    closed_before = newest - timedelta(seconds=allowed_lateness_s)
    states = {
        row.key: (SpikeState.from_json(row.state), row.last_window_start)
        for row in conn.execute(select(spike_state).where(spike_state.c.series == series,
                                                          spike_state.c.dimension == dimension))
    }
    points: dict[str, list[Point]] = defaultdict(list)
    rows = conn.execute(
        select(tw.c.key, tw.c.window_start, tw.c.n_messages, tw.c.n_negative)
        .where(tw.c.series == series, tw.c.dimension == dimension, tw.c.window_start < closed_before)
        .order_by(tw.c.key, tw.c.window_start)
    )
    for row in rows:
        key, start = str(row.key), row.window_start
        last = states.get(key, (None, None))[1]
        if last is None or start > last:
            points[key].append(Point(start, int(row.n_messages), int(row.n_negative)))
    touched: list[int] = []
    for key, key_points in points.items():
        state = states.get(key, (SpikeState(), None))[0]
        key_params = params_for(params, overrides, dimension, key)
        for point in key_points:
            state, event = step(state, point, key_params)
            if event is not None:
                touched.append(_record_event(conn, series, dimension, key, event, window_seconds, routes))
        last_window = key_points[-1].window_start
        conn.execute(
            insert(spike_state)
            .values(series=series, dimension=dimension, key=key, state=asdict(state), last_window_start=last_window)
            .on_conflict_do_update(
                index_elements=["series", "dimension", "key"],
                set_={"state": asdict(state), "last_window_start": last_window, "updated_at": func.now()},
            )
        )
    return touched


def _record_event(
    conn: Connection, series: str, dimension: str, key: str, event: SpikeEvent, window_seconds: int,
    routes: list[Route],
) -> int:
    if event.kind == "opened":
        payload = _opened_payload(conn, series, dimension, key, event, window_seconds)
        alert_id: int = conn.execute(
            insert(alerts)
            .values(series=series, dimension=dimension, key=key, window_start=event.window_start, status="open",
                    severity=event.severity, observed_share=event.observed_share,
                    baseline_share=event.baseline_share, baseline_std=event.baseline_std,
                    volume=event.volume, payload=payload)
            .returning(alerts.c.id)
        ).scalar_one()
        payload["alert_id"] = alert_id
        severity = event.severity
    else:
        opened = conn.execute(
            select(alerts.c.id, alerts.c.severity).where(
                alerts.c.series == series, alerts.c.dimension == dimension, alerts.c.key == key,
                alerts.c.status == "open").order_by(alerts.c.id.desc()).limit(1)
        ).first()
        if opened is None:
            return -1
        alert_id, severity = int(opened.id), str(opened.severity)
        conn.execute(alerts.update().where(alerts.c.id == alert_id).values(
            status="resolved", resolved_at=func.now(), resolved_window_start=event.window_start))
        payload = {"type": "alert.resolved", "alert_id": alert_id, "series": series, "dimension": dimension,
                   "key": key, "window_start": event.window_start.isoformat(),
                   "observed_negative_share": round(event.observed_share, 4),
                   "baseline_negative_share": round(event.baseline_share, 4), "volume": event.volume}
    disabled: set[str] = set(conn.execute(select(webhook_endpoints.c.url)).scalars())
    for url in recipients(routes, dimension, key, severity):  # a resolve goes where its alert went
        conn.execute(insert(alert_deliveries).values(
            alert_id=alert_id, event=payload["type"], endpoint_url=url,
            webhook_id=f"msg_{uuid.uuid4().hex}", payload=payload,
            status="disabled" if url in disabled else "pending"))
    return int(alert_id)


def _opened_payload(
    conn: Connection, series: str, dimension: str, key: str, event: SpikeEvent, window_seconds: int
) -> dict[str, Any]:
    """What a risk analyst needs to judge the alert: the window, baseline vs observed, the worst texts."""
    cm = classified_messages
    about = cm.c.topic == key if dimension == "topic" else cm.c.tickers.contains([key]) if dimension == "ticker" \
        else cm.c.source == key
    worst = conn.execute(
        select(cm.c.text, cm.c.source, cm.c.url, cm.c.sentiment_score)
        .where(about, cm.c.window_start == event.window_start, cm.c.text.is_not(None))  # None: past retention
        .order_by(cm.c.sentiment_score).limit(3)
    ).all()
    end = event.window_start + timedelta(seconds=window_seconds)
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
