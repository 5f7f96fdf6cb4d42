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
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.dialects.postgresql import distinct_on, insert

from config.settings import Settings
from schemas.tables import (
    alert_deliveries,
    alerts,
    classified_messages,
    message_texts,
    spike_state,
    trend_windows,
    webhook_endpoints,
    window_diversity,
)
from workers.alerting.diversity import (
    CoordinationEvent,
    CoordinationParams,
    CoordinationState,
    Group,
    Mix,
    mix,
    step_coordination,
)
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


def newest_window(conn: Connection, series: str, dimension: str) -> datetime | None:
    """The newest window written: the newest of the input partitions' (`ingest_progress`), or, with no
    recorded progress, the dimension's newest trend window. The watermark lags behind it by the allowed
    lateness and by whatever holds it back (a partition behind the others)."""
    newest = conn.execute(text("SELECT max(window_start) FROM ingest_progress WHERE series = :series"),
                          {"series": series}).scalar()
    if newest is None:
        newest = conn.execute(select(func.max(trend_windows.c.window_start)).where(
            trend_windows.c.series == series, trend_windows.c.dimension == dimension)).scalar()
    return newest  # type: ignore[no-any-return]  # a timestamptz or NULL


def closed_by_dimension(conn: Connection, series: str, dimensions: tuple[str, ...] | list[str],
                        allowed_lateness_s: int, idle_s: float) -> dict[str, datetime]:
    """`closed_before` of each dimension that has windows."""
    return {d: c for d in dimensions if (c := closed_before(conn, series, d, allowed_lateness_s, idle_s)) is not None}


class AlertEvent(NamedTuple):
    """An alert opened or resolved by a step."""

    alert_id: int
    kind: str  # "opened" or "resolved"


@dataclass(frozen=True)
class Detection:
    """What step_key needs besides the key: the parameters and where alerts go."""

    params: SpikeParams
    window_seconds: int
    routes: list[Route]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts_topic: str = ""  # also publish every alert event there (through the outbox); "" turns it off
    author_cap: int = 3  # stories an author counts for in a window (diversity.mix)
    coordination: CoordinationParams = field(default_factory=CoordinationParams)


def detection_of(settings: Settings, routes: list[Route]) -> Detection:
    """The detection settings of a detector process."""
    return Detection(spike_params(settings), settings.window_seconds, routes, settings.spike_overrides,
                     settings.alerts_topic, author_cap(settings), coordination_params(settings))


def window_mix(conn: Connection, series: str, dimension: str, key: str, window_start: datetime, window_seconds: int,
               author_cap: int) -> Mix:
    """The stored messages of one window of one key, grouped by (story, author) in order of first
    message, summarised by `diversity.mix`. A row stored before stories existed is a story of its own."""
    cm = classified_messages
    about = cm.c.topic == key if dimension == "topic" else cm.c.tickers.any_() == key if dimension == "ticker" \
        else cm.c.source == key
    story = func.coalesce(cm.c.story_id, func.hashtextextended(cm.c.message_key, 0))
    first = func.min(cm.c.published_at)
    rows = conn.execute(
        select(story.label("story"), cm.c.author_key, func.count().label("messages"),
               func.count().filter(cm.c.sentiment == "negative").label("negatives"))
        .where(about, cm.c.series == series, cm.c.window_start == window_start, cm.c.published_at >= window_start,
               cm.c.published_at < window_start + timedelta(seconds=window_seconds))
        .group_by(story, cm.c.author_key).order_by(first, story)
    ).all()
    return mix([Group(int(r.story), r.author_key, int(r.messages), int(r.negatives)) for r in rows], author_cap)


def effective_point(point: Point, window: Mix) -> tuple[Point, Mix]:
    """The trend window's counts less what did not count in its stored messages (repeats of a story, an
    author past the cap): the point the sentiment CUSUM steps, and the window's mix on the trend's counts.
    A window with no stored messages (trend rows written by hand or a backfill) keeps its counts."""
    effective = max(0, point.volume - window.excess)
    effective_negatives = max(0, min(effective, point.negatives - (window.negatives - window.effective_negatives)))
    adjusted = replace(window, messages=point.volume, negatives=point.negatives, effective=effective,
                       effective_negatives=effective_negatives)
    return Point(point.window_start, effective, effective_negatives), adjusted


def step_key(conn: Connection, detection: Detection, series: str, dimension: str, key: str,
             closed: datetime) -> tuple[list[AlertEvent], datetime | None]:
    """Step one key through its closed windows not stepped yet, in the caller's transaction; return the
    alerts opened or resolved, and the last window stepped (None: nothing new)."""
    conn.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(f"{series}|{dimension}|{key}", 0))))
    row = conn.execute(select(spike_state.c.state, spike_state.c.last_window_start).where(
        spike_state.c.series == series, spike_state.c.dimension == dimension, spike_state.c.key == key)).first()
    saved = dict(row.state) if row else {}
    coordinated = CoordinationState.from_json(saved.pop("coordination")) if "coordination" in saved \
        else CoordinationState()
    state, last = (SpikeState.from_json(saved), row.last_window_start) if row else (SpikeState(), None)
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
    touched: list[AlertEvent] = []
    for raw in points:
        point, window = effective_point(raw, window_mix(conn, series, dimension, key, raw.window_start,
                                                          detection.window_seconds, detection.author_cap))
        state, event = step(state, point, key_params)
        coordinated, c_event = step_coordination(coordinated, point.window_start, window, detection.coordination)
        _record_diversity(conn, series, dimension, key, point.window_start, window, coordinated.open)
        if event is not None and (alert_id := _record_event(conn, detection, series, dimension, key, event)):
            touched.append(AlertEvent(alert_id, event.kind))
        if c_event is not None and (alert_id := _record_coordination(conn, detection, series, dimension, key, c_event)):
            touched.append(AlertEvent(alert_id, c_event.kind))
    last = points[-1].window_start
    saved_state = {**asdict(state), "coordination": asdict(coordinated)}
    conn.execute(
        insert(spike_state)
        .values(series=series, dimension=dimension, key=key, state=saved_state, last_window_start=last)
        .on_conflict_do_update(index_elements=["series", "dimension", "key"],
                               set_={"state": saved_state, "last_window_start": last, "updated_at": func.now()})
    )
    return touched, last


def _record_diversity(conn: Connection, series: str, dimension: str, key: str, window_start: datetime, window: Mix,
                      coordinated: bool) -> None:
    values = {"n_messages": window.messages, "n_stories": window.stories, "n_authors": window.authors,
              "n_effective": window.effective, "n_effective_negative": window.effective_negatives,
              "excess": window.excess, "coordinated": coordinated}
    conn.execute(insert(window_diversity).values(series=series, dimension=dimension, key=key,
                                                 window_start=window_start, **values)
                 .on_conflict_do_update(index_elements=["series", "dimension", "key", "window_start"],
                                        set_={**values, "updated_at": func.now()}))


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
    author_cap: int = 3,
    coordination: CoordinationParams = CoordinationParams(),
) -> list[int]:
    """Step every key with closed windows, each in its own transaction; return ids of alerts opened or
    resolved."""
    detection = Detection(params, window_seconds, routes, overrides or {}, alerts_topic, author_cap, coordination)
    with engine.connect() as conn:
        closed = closed_by_dimension(conn, series, dimensions, allowed_lateness_s, idle_s)
        keys = pending_keys(conn, series, dimensions, closed)
    touched: list[int] = []
    for dimension, key in keys:
        with engine.begin() as conn:
            touched += [e.alert_id for e in step_key(conn, detection, series, dimension, key, closed[dimension])[0]]
    return touched


def _record_event(
    conn: Connection, detection: Detection, series: str, dimension: str, key: str, event: SpikeEvent,
) -> int | None:
    """A negative spike: the alert row and its outbox rows. None: this episode's alert is already recorded
    (its unique key: series, dimension, key, kind, window)."""
    if event.kind == "opened":
        payload = _opened_payload(conn, series, dimension, key, event, detection.window_seconds)
        alert_id = _insert_alert(conn, series, dimension, key, "sentiment", event.window_start, event.severity,
                                 event.observed_share, event.baseline_share, event.baseline_std, event.volume, payload)
        if alert_id is None:
            return None
        payload["alert_id"] = alert_id
        severity = event.severity
    else:
        opened = _resolve(conn, series, dimension, key, "sentiment", event.window_start)
        if opened is None:
            return None
        alert_id, severity = opened
        payload = {"type": "alert.resolved", "alert_id": alert_id, "series": series, "dimension": dimension,
                   "key": key, "window_start": event.window_start.isoformat(),
                   "observed_negative_share": round(event.observed_share, 4),
                   "baseline_negative_share": round(event.baseline_share, 4), "volume": event.volume}
    _queue(conn, detection, alert_id, payload, dimension, key, severity, "sentiment")
    return alert_id


def _record_coordination(
    conn: Connection, detection: Detection, series: str, dimension: str, key: str, event: CoordinationEvent,
) -> int | None:
    """Coordinated activity: an alert of its own kind, with the story and the accounts behind the excess."""
    common = {"series": series, "dimension": dimension, "key": key, "window_start": event.window_start.isoformat(),
              "messages": event.messages, "effective_messages": event.effective, "excess": event.excess,
              "usual_effective_volume": round(event.usual_volume, 2), "usual_excess": round(event.usual_excess, 2)}
    if event.kind == "opened":
        end = event.window_start + timedelta(seconds=detection.window_seconds)
        payload = {"type": "coordinated.opened", **common, "window_end": end.isoformat(), "severity": event.severity,
                   "story": _story(conn, series, event, end), "accounts": _accounts(conn, series, event, end)}
        share = event.excess / event.messages if event.messages else 0.0
        usual_share = event.usual_excess / (event.usual_volume + event.usual_excess) \
            if event.usual_volume + event.usual_excess else 0.0
        alert_id = _insert_alert(conn, series, dimension, key, "coordinated", event.window_start, event.severity,
                                 share, usual_share, 0.0, event.messages, payload)
        if alert_id is None:
            return None
        payload["alert_id"] = alert_id
        severity = event.severity
    else:
        opened = _resolve(conn, series, dimension, key, "coordinated", event.window_start)
        if opened is None:
            return None
        alert_id, severity = opened
        payload = {"type": "coordinated.resolved", "alert_id": alert_id, **common}
    _queue(conn, detection, alert_id, payload, dimension, key, severity, "coordinated")
    return alert_id


def _insert_alert(conn: Connection, series: str, dimension: str, key: str, kind: str, window_start: datetime,
                  severity: str, observed: float, baseline: float, baseline_std: float, volume: int,
                  payload: dict[str, Any]) -> int | None:
    return conn.execute(
        insert(alerts)
        .values(series=series, dimension=dimension, key=key, kind=kind, window_start=window_start, status="open",
                severity=severity, observed_share=observed, baseline_share=baseline, baseline_std=baseline_std,
                volume=volume, payload=payload)
        .on_conflict_do_nothing(constraint="uq_alerts_key_kind_window")
        .returning(alerts.c.id)
    ).scalar()


def _resolve(conn: Connection, series: str, dimension: str, key: str, kind: str,
             window_start: datetime) -> tuple[int, str] | None:
    """Resolve the key's open alert of this kind: (its id, its severity), or None when none is open."""
    opened = conn.execute(
        select(alerts.c.id, alerts.c.severity).where(
            alerts.c.series == series, alerts.c.dimension == dimension, alerts.c.key == key, alerts.c.kind == kind,
            alerts.c.status == "open").order_by(alerts.c.id.desc()).limit(1)
    ).first()
    if opened is None:
        return None
    conn.execute(alerts.update().where(alerts.c.id == opened.id).values(
        status="resolved", resolved_at=func.now(), resolved_window_start=window_start))
    return int(opened.id), str(opened.severity)


def _queue(conn: Connection, detection: Detection, alert_id: int, payload: dict[str, Any], dimension: str, key: str,
           severity: str, kind: str) -> None:
    """One outbox row per receiver (and the alerts topic), all with one event id."""
    disabled: set[str] = set(conn.execute(select(webhook_endpoints.c.url)).scalars())
    event_id = f"msg_{uuid.uuid4().hex}"  # the webhook-id of every receiver, and the alerts topic's event id
    urls = recipients(detection.routes, dimension, key, severity, kind)  # a resolve goes where its alert went
    urls += [KAFKA_PREFIX + detection.alerts_topic] if detection.alerts_topic else []
    for url in urls:
        conn.execute(insert(alert_deliveries).values(
            alert_id=alert_id, event=payload["type"], endpoint_url=url, webhook_id=event_id, payload=payload,
            status="disabled" if url in disabled else "pending"))


def _story(conn: Connection, series: str, event: CoordinationEvent, end: datetime) -> dict[str, Any]:
    """The story that made most of the excess: one of its texts (if still within the text horizon)."""
    cm, mt = classified_messages, message_texts
    text_row = conn.execute(
        select(mt.c.text).join(cm, (mt.c.message_key == cm.c.message_key) & (mt.c.published_at == cm.c.published_at))
        .where(cm.c.story_id == event.top_story, cm.c.series == series, cm.c.window_start == event.window_start,
               cm.c.published_at >= event.window_start, cm.c.published_at < end,
               mt.c.published_at >= event.window_start, mt.c.published_at < end).limit(1)
    ).first()
    return {"story_id": event.top_story, "messages": event.top_story_messages,
            "text": str(text_row.text)[:280] if text_row else None}


def _accounts(conn: Connection, series: str, event: CoordinationEvent, end: datetime) -> list[dict[str, Any]]:
    """The busiest accounts of the window: source and author (while their texts are kept) and messages."""
    keys = [author for author, _ in event.top_authors]
    cm, mt = classified_messages, message_texts
    names = {r.author_key: (r.source, r.author) for r in conn.execute(
        select(cm.c.author_key, cm.c.source, mt.c.author)
        .join(mt, (mt.c.message_key == cm.c.message_key) & (mt.c.published_at == cm.c.published_at))
        .where(cm.c.author_key.in_(keys), cm.c.series == series, cm.c.window_start == event.window_start,
               cm.c.published_at >= event.window_start, cm.c.published_at < end,
               mt.c.published_at >= event.window_start, mt.c.published_at < end)
        .ext(distinct_on(cm.c.author_key)))} if keys else {}
    return [{"source": names.get(a, (None, None))[0], "author": names.get(a, (None, None))[1], "messages": n}
            for a, n in event.top_authors]


def _opened_payload(
    conn: Connection, series: str, dimension: str, key: str, event: SpikeEvent, window_seconds: int
) -> dict[str, Any]:
    """What a risk analyst needs to judge the alert: the window, baseline vs observed, the worst texts."""
    cm, mt = classified_messages, message_texts
    about = cm.c.topic == key if dimension == "topic" else cm.c.tickers.contains([key]) if dimension == "ticker" \
        else cm.c.source == key
    end = event.window_start + timedelta(seconds=window_seconds)
    story = func.coalesce(cm.c.story_id, func.hashtextextended(cm.c.message_key, 0))
    per_story = (  # the most negative text of each story: three exemplars are three stories, not one repeated
        select(mt.c.text, cm.c.source, mt.c.url, cm.c.sentiment_score)
        .join(mt, (mt.c.message_key == cm.c.message_key) & (mt.c.published_at == cm.c.published_at))
        .where(about, cm.c.series == series, cm.c.window_start == event.window_start,  # a text past retention: no row
               # the window's messages were published within it: this reads one day's partitions
               cm.c.published_at >= event.window_start, cm.c.published_at < end,
               mt.c.published_at >= event.window_start, mt.c.published_at < end)
        .ext(distinct_on(story)).order_by(story, cm.c.sentiment_score)
    ).subquery()
    worst = conn.execute(select(per_story).order_by(per_story.c.sentiment_score).limit(3)).all()
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
