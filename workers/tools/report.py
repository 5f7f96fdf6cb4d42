"""`finsentry report`: trend lines per topic with alert markers, as a PNG or a self-contained HTML page.

For people without Grafana: one small panel per topic (the busiest ones, or those asked for) with the
negative share over time, the volume behind it, the topic's typical level, and every alert marked.
Buckets of an hour or more read the hourly roll-up, of a day the daily one (`resolution`), so a report
over weeks reads a few hundred rows per topic and still covers days whose minute windows are deleted.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from schemas.errors import UsageError

BUCKETS_MIN = (1, 5, 15, 60, 240, 1440)
# Trend tables by the minutes of one row, coarsest first.
RESOLUTIONS = (("trend_daily", 1440), ("trend_hourly", 60), ("trend_windows", 1))


@dataclass(frozen=True)
class Panel:
    topic: str
    times: list[datetime]
    share: list[float]
    volume: list[int]
    alerts: list[dict[str, Any]]


def bucket_minutes(span: timedelta, target_points: int = 120) -> int:
    wanted = span.total_seconds() / 60 / target_points
    return next((b for b in BUCKETS_MIN if b >= wanted), BUCKETS_MIN[-1])


def resolution(bucket: int) -> tuple[str, int]:
    """The coarsest trend table whose rows fit whole in a bucket of `bucket` minutes, and its row minutes."""
    return next((table, minutes) for table, minutes in RESOLUTIONS if bucket % minutes == 0)


def load_panels(
    engine: Engine, since: datetime, until: datetime, series: str, topics: list[str] | None, max_topics: int,
) -> tuple[list[Panel], int]:
    minutes = bucket_minutes(until - since)
    table, row_minutes = resolution(minutes)
    # A roll-up row starts on its hour or day: the first one that overlaps `since` counts whole.
    since = datetime.fromtimestamp(since.timestamp() // (row_minutes * 60) * row_minutes * 60, timezone.utc)
    with engine.connect() as conn:
        if not topics:  # topics with alerts first, then the busiest
            topics = list(conn.execute(text(
                f"SELECT t.key FROM {table} t LEFT JOIN (SELECT DISTINCT key FROM alerts WHERE series = :s "
                "AND dimension = 'topic' AND window_start >= :a AND window_start < :b) a ON a.key = t.key "
                "WHERE t.series = :s AND t.dimension = 'topic' AND t.window_start >= :a AND t.window_start < :b "
                "GROUP BY t.key ORDER BY bool_or(a.key IS NOT NULL) DESC, sum(t.n_messages) DESC LIMIT :n"),
                {"s": series, "a": since, "b": until, "n": max_topics}).scalars())
        panels = []
        for topic in topics:
            rows = conn.execute(text(
                "SELECT date_bin(make_interval(mins => :m), window_start, :a) AS bucket, "
                f"sum(n_messages) AS n, sum(n_negative) AS neg FROM {table} "
                "WHERE series = :s AND dimension = 'topic' AND key = :k AND window_start >= :a AND window_start < :b "
                "GROUP BY 1 ORDER BY 1"), {"m": minutes, "s": series, "k": topic, "a": since, "b": until}).all()
            topic_alerts = conn.execute(text(
                "SELECT window_start, resolved_window_start, severity, observed_share, baseline_share, status "
                "FROM alerts "
                "WHERE series = :s AND dimension = 'topic' AND key = :k AND window_start >= :a AND window_start < :b "
                "ORDER BY window_start"), {"s": series, "k": topic, "a": since, "b": until}).mappings().all()
            panels.append(Panel(topic, [r.bucket for r in rows], [float(r.neg) / float(r.n) for r in rows],
                                [int(r.n) for r in rows], [dict(a) for a in topic_alerts]))
    return panels, minutes


def draw_png(panels: list[Panel], title: str, subtitle: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    colors = {"high": "#b2182b", "medium": "#ef8a62", "low": "#fddbc7"}
    n = max(1, len(panels))
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(7.2 * cols, 2.6 * rows + 0.9), sharex=True, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels):
        volume_ax = ax.twinx()
        if panel.times:
            width = (panel.times[1] - panel.times[0]) if len(panel.times) > 1 else timedelta(minutes=1)
            volume_ax.bar(panel.times, panel.volume, width=width * 0.9, color="#d9d9d9", zorder=0)
            ax.plot(panel.times, panel.share, color="#2166ac", linewidth=1.6, zorder=3)
            typical = sorted(panel.share)[len(panel.share) // 2]
            ax.axhline(typical, color="#2166ac", linestyle=":", linewidth=1, alpha=0.7)
        for alert in panel.alerts:
            start = alert["window_start"]
            end = alert["resolved_window_start"] or (panel.times[-1] if panel.times else start)
            ax.axvspan(start, max(end, start + timedelta(minutes=1)), color=colors[alert["severity"]], alpha=0.25,
                       zorder=1)
            ax.annotate(f"{alert['severity']} alert\n{alert['baseline_share']:.0%} → {alert['observed_share']:.0%}",
                        xy=(start, min(alert["observed_share"], 1.0)), xytext=(4, -4), textcoords="offset points",
                        fontsize=8, color=colors["high"], va="top", zorder=4)
            ax.plot([start], [min(alert["observed_share"], 1.0)], marker="v", color=colors["high"], markersize=8,
                    zorder=4)
        ax.set_ylim(0, 1.05)
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.set_zorder(volume_ax.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.set_title(panel.topic, loc="left", fontsize=11, fontweight="bold")
        ax.set_ylabel("negative share", fontsize=9)
        volume_ax.set_ylabel("messages", fontsize=8, color="#969696")
        volume_ax.tick_params(axis="y", labelsize=8, colors="#969696")
        ax.grid(axis="y", alpha=0.3)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    header = 0.9 / fig.get_figheight()  # inches of header, as a fraction of the figure
    fig.tight_layout(rect=(0, 0, 1, 1 - header))
    fig.text(0.01, 1 - 0.3 / fig.get_figheight(), title, fontsize=14, fontweight="bold", va="center")
    fig.text(0.01, 1 - 0.62 / fig.get_figheight(), subtitle, fontsize=9, color="#525252", va="center")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def draw_html(png: bytes, panels: list[Panel], title: str, subtitle: str) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(p.topic)}</td><td>{a['window_start']:%Y-%m-%d %H:%M}</td><td>{a['severity']}</td>"
        f"<td>{a['baseline_share']:.0%} → {a['observed_share']:.0%}</td><td>{a['status']}</td></tr>"
        for p in panels for a in p.alerts)
    return (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<body style='font-family:sans-serif;max-width:1400px;margin:auto'><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(subtitle)}</p><img alt='trends' style='max-width:100%' "
            f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            f"<h2>Alerts</h2><table border=1 cellpadding=4 style='border-collapse:collapse'>"
            f"<tr><th>topic</th><th>window</th><th>severity</th><th>baseline → observed</th><th>status</th></tr>"
            f"{rows or '<tr><td colspan=5>none</td></tr>'}</table></body>")


def write_report(
    engine: Engine, output: Path, since: timedelta, series: str = "live", topics: list[str] | None = None,
    max_topics: int = 6, until: datetime | None = None,
) -> dict[str, Any]:
    end = until or datetime.now(timezone.utc)
    start = end - since
    panels, minutes = load_panels(engine, start, end, series, topics, max_topics)
    title = "finsentry: negative share by topic"
    subtitle = (f"{start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC, series '{series}', {minutes}-minute buckets. "
                "Blue: share of messages classified negative (dotted: the topic's median); grey bars: "
                "volume; shaded: alert episodes.")
    png = draw_png(panels, title, subtitle)
    if output.suffix == ".html":
        output.write_text(draw_html(png, panels, title, subtitle), encoding="utf-8")
    elif output.suffix == ".png":
        output.write_bytes(png)
    else:
        raise UsageError(f"{output}: the report is written as .png or .html")
    return {"output": str(output), "topics": [p.topic for p in panels], "alerts": sum(len(p.alerts) for p in panels),
            "bucket_minutes": minutes, "table": resolution(minutes)[0]}


def parse_since(value: str) -> timedelta:
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if len(value) < 2 or value[-1] not in units or not value[:-1].isdigit():
        raise UsageError(f"--since {value!r}: use a number and m, h or d, e.g. 90m, 24h, 7d")
    return timedelta(**{units[value[-1]]: int(value[:-1])})
