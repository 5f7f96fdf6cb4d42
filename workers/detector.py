"""Runs spike detection over closed trend windows, and writes alerts with their outbox rows.

One owner decides: the whole pass holds a transaction-level advisory lock, so however many workers
call it, each window of each key is stepped once, and the alert, its delivery rows and the advanced
detector state commit together (a crash loses none and repeats none).
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select
from sqlalchemy.dialects.postgresql import insert

from schemas.tables import alert_deliveries, alerts, classified_messages, spike_state, trend_windows
from workers.spikes import Point, SpikeEvent, SpikeParams, SpikeState, step

DETECTOR_LOCK = 7_310_001  # pg advisory lock key for the detection pass


def run_detection(
    engine: Engine,
    params: SpikeParams,
    allowed_lateness_s: int,
    window_seconds: int,
    webhook_urls: list[str],
    series: str = "live",
    dimension: str = "topic",
) -> list[int]:
    """One pass: step every key through its closed windows; return ids of alerts opened or resolved."""
    touched: list[int] = []
    with engine.begin() as conn:
        if not conn.execute(select(func.pg_try_advisory_xact_lock(DETECTOR_LOCK))).scalar():
            return touched
        newest = conn.execute(
            select(func.max(trend_windows.c.window_start)).where(
                trend_windows.c.series == series, trend_windows.c.dimension == dimension
            )
        ).scalar()
        if newest is None:
            return touched
        # Event-time watermark: windows older than the newest minus the allowed lateness are closed.
        closed_before = newest - timedelta(seconds=allowed_lateness_s)
        states = {
            row.key: (SpikeState(**row.state), row.last_window_start)
            for row in conn.execute(select(spike_state).where(
                spike_state.c.series == series, spike_state.c.dimension == dimension))
        }
        points: dict[str, list[Point]] = defaultdict(list)
        rows = conn.execute(
            select(trend_windows.c.key, trend_windows.c.window_start, trend_windows.c.n_messages,
                   trend_windows.c.n_negative)
            .where(trend_windows.c.series == series, trend_windows.c.dimension == dimension,
                   trend_windows.c.window_start < closed_before)
            .order_by(trend_windows.c.key, trend_windows.c.window_start)
        )
        for key, start, n, neg in rows:
            last = states.get(key, (None, None))[1]
            if last is None or start > last:
                points[key].append(Point(start, int(n), int(neg)))
        for key, key_points in points.items():
            state = states.get(key, (SpikeState(), None))[0]
            for point in key_points:
                state, event = step(state, point, params)
                if event is not None:
                    touched.append(_record_event(conn, series, dimension, key, event, window_seconds, webhook_urls))
            conn.execute(
                insert(spike_state)
                .values(series=series, dimension=dimension, key=key, state=asdict(state),
                        last_window_start=key_points[-1].window_start)
                .on_conflict_do_update(
                    index_elements=["series", "dimension", "key"],
                    set_={"state": asdict(state), "last_window_start": key_points[-1].window_start,
                          "updated_at": func.now()},
                )
            )
    return touched


def _record_event(
    conn: Connection, series: str, dimension: str, key: str, event: SpikeEvent, window_seconds: int,
    urls: list[str],
) -> int:
    if event.kind == "opened":
        payload = _payload(conn, series, dimension, key, event, window_seconds)
        alert_id = conn.execute(
            insert(alerts)
            .values(series=series, dimension=dimension, key=key, window_start=event.window_start, status="open",
                    severity=event.severity, observed_share=event.observed_share,
                    baseline_share=event.baseline_share, baseline_std=event.baseline_std,
                    volume=event.volume, payload=payload)
            .returning(alerts.c.id)
        ).scalar_one()
        payload["alert_id"] = alert_id
    else:
        alert_id = conn.execute(
            select(alerts.c.id).where(alerts.c.series == series, alerts.c.dimension == dimension,
                                      alerts.c.key == key, alerts.c.status == "open").order_by(alerts.c.id.desc()).limit(1)
        ).scalar()
        if alert_id is None:
            return -1
        conn.execute(alerts.update().where(alerts.c.id == alert_id)
                     .values(status="resolved", resolved_at=func.now()))
        payload = {"type": "alert.resolved", "alert_id": alert_id, "series": series,
                   "dimension": dimension, "key": key,
                   "window_start": event.window_start.isoformat(),
                   "observed_negative_share": round(event.observed_share, 4),
                   "baseline_negative_share": round(event.baseline_share, 4), "volume": event.volume}
    for url in urls:
        conn.execute(insert(alert_deliveries).values(
            alert_id=alert_id, event=payload["type"], endpoint_url=url,
            webhook_id=f"msg_{uuid.uuid4().hex}", payload=payload))
    return int(alert_id)


def _payload(
    conn: Connection, series: str, dimension: str, key: str, event: SpikeEvent, window_seconds: int
) -> dict[str, Any]:
    """What a risk analyst needs to judge the alert: the window, baseline vs observed, the worst texts."""
    end = event.window_start + timedelta(seconds=window_seconds)
    worst = conn.execute(
        select(classified_messages.c.text, classified_messages.c.source, classified_messages.c.url,
               classified_messages.c.sentiment_score)
        .where(and_(classified_messages.c.topic == key,
                    classified_messages.c.window_start == event.window_start))
        .order_by(classified_messages.c.sentiment_score).limit(3)
    ).all() if dimension == "topic" else []
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
        "top_negative": [{"text": t[:280], "source": s, "url": u, "sentiment_score": round(sc, 3)}
                         for t, s, u, sc in worst],
    }))

