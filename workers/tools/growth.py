"""`finsentry bench --growth`: days of a live feed in compressed time, with retention on.

In a scratch database of its own (created on the configured server, dropped at the end) it:
1. creates the partitions ahead, as the scheduler would;
2. fills one simulated day at a time in SQL, as a live feed would have: increasing tweet ids, publication
   times spread over the day, real tweet texts (118 bytes on average) from the labelled data, and a day
   of minute trend windows with their roll-ups;
3. after each day vacuums and analyses what the day wrote and takes a checkpoint (autovacuum's work over
   a live day, which would otherwise still run beside the next measurement), then runs retention as the
   scheduler would at 00:30 the next day (`apply_retention`, the same code); the first time the tables
   hold `horizon_days + 2` days (`rows_max`), before that retention run, it measures the project's sink
   (`bench.measure_sink_alone`, fresh messages) there and in a second, empty scratch database, three
   times each, alternately on the same messages, so that both meet the same machine
   (`sink_rows_per_s_full`, `sink_rows_per_s_empty`: the best run of each; `sink_runs`: all);
4. runs the host end-to-end path (`finsentry worker --zero-cost-model` in a process of its own, the
   messages already in the broker) and reads from /proc the CPU seconds per 1,000 messages of the worker,
   its writer process, the Postgres backends of the scratch database and the broker.

The simulated days end yesterday (UTC), so that the worker and the sink accept the messages as they
would live ones. Sizes: `bytes_per_day` is one full day of messages and texts (tables, indexes, TOAST);
`bytes_after` is everything in the two partitioned tables after the last retention run, the partitions
created ahead included.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, make_url, text

from config.settings import Horizons, Settings
from models.classifier import ZeroCostClassifier
from models.dataset import SENTIMENT_DIR, TOPIC_DIR, read_labelled_csv
from schemas.tables import day_partition
from workers.ingest.kafka_io import ensure_topics
from workers.ingest.processes import child_env, ready, stop_child
from workers.lifecycle import partitions
from workers.lifecycle.retention import apply_retention
from workers.pipeline import stages
from workers.services.db import make_engine, migrate, pooled, sqlalchemy_url
from workers.services.embedded import free_port
from workers.tools.bench import bench_texts, measure_pipeline, measure_sink_alone
from workers.tools.proc_cpu import children, cmdline, cpu_seconds, listening_pid
from workers.tools.replay import produce

E2E_APPLICATION = "finsentry-growth-e2e"  # the worker's connections, told apart from the bench's own
FIRST_ID = 1_790_000_000_000_000_000
SINK_PAIRS = 3  # tweet-like ids, increasing through the simulated days
TOPICS = ("Analyst Update", "Fed | Central Banks", "Company | Product News", "Treasuries | Corporate Debt",
          "Dividend", "Earnings", "Energy | Oil", "Financials", "Currencies", "General News | Opinion",
          "Gold | Metals | Materials", "IPO", "Legal | Regulation", "M&A | Investments", "Macro", "Markets",
          "Politics", "Personnel Change", "Stock Commentary", "Stock Movement")


@dataclass(frozen=True)
class GrowthSizes:
    horizon_days: int = 3  # messages, texts and minute windows alike
    days: int = 6  # at least horizon_days + 3: the tables reach horizon_days + 2 days and retention drops some
    rows_per_day: int = 4_200_000
    sink_msgs: int = 20_000  # each of the sink's two runs, at each size
    e2e_msgs: int = 20_000
    keys_per_minute: int = 300  # trend keys (topics, sources, tickers) with a window each minute


def _texts() -> list[str]:
    pool = {ex.text for ex in read_labelled_csv(TOPIC_DIR / "train.csv", "topic")}
    pool |= {ex.text for ex in read_labelled_csv(SENTIMENT_DIR / "train.csv", "sentiment")}
    return sorted(pool)


@contextmanager
def scratch_database(server_url: str, keep: bool = False) -> Iterator[str]:
    """A database of the run's own on the same server, migrated; dropped afterwards (unless `keep`)."""
    server = make_url(sqlalchemy_url(server_url))
    name = f"finsentry_growth_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = server.set(database=name).render_as_string(hide_password=False)
        migrate(url)
        yield url
    finally:
        if not keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


_MESSAGE_COLUMNS = ("message_key, kind, source, external_id, published_at, window_start, language, topic, "
                    "topic_prob, sentiment, p_negative, p_neutral, p_positive, sentiment_score, tickers, "
                    "model_version, kafka_topic, kafka_partition, kafka_offset, classified_at")
# n: the day's message number; ts: its publication time, spread evenly over the day.
_ROWS = """
FROM generate_series(0, %(rows)s - 1) AS n,
     LATERAL (SELECT %(start)s + n * (86400.0 / %(rows)s) * interval '1 second') AS t(ts)
"""
_GENERATE_MESSAGES = f"""
INSERT INTO classified_messages ({_MESSAGE_COLUMNS})
SELECT 'growth:' || (%(first_id)s + n)::text, 'social', 'growth-' || n %% 7, (%(first_id)s + n)::text, ts,
       date_bin('1 minute', ts, timestamptz 'epoch'), 'en', (%(topics)s::text[])[1 + n %% 20],
       0.4 + (n %% 60) / 100.0, (ARRAY['negative', 'neutral', 'positive'])[1 + (n / 7) %% 3],
       0.1 + (n %% 5) / 10.0, 0.2, 0.7 - (n %% 5) / 10.0, 0.6 - (n %% 5) / 5.0,
       CASE WHEN n %% 3 = 0 THEN ARRAY['T' || lpad((n %% 500)::text, 3, '0')] ELSE '{{}}'::text[] END,
       'fs-a0cb45f9748b', 'finsentry.social', (n %% 12)::int, %(first_id)s + n, ts + interval '0.2 second'
{_ROWS}"""
_GENERATE_TEXTS = f"""
INSERT INTO message_texts (message_key, published_at, text, url, author)
SELECT 'growth:' || (%(first_id)s + n)::text, ts, p.text, NULL, '@user' || n %% 100000
{_ROWS}, growth_texts p WHERE p.id = n %% %(pool)s"""
_GENERATE_MINUTES = """
INSERT INTO trend_windows (series, dimension, key, window_start, window_seconds, n_messages, n_negative, n_neutral,
                           n_positive, sum_score)
SELECT 'live', k.dimension, k.key, %(start)s + m * interval '1 minute', 60, c, c / 4, c / 2, c - c / 4 - c / 2, c * 0.05
FROM generate_series(0, 1439) AS m, growth_keys k, LATERAL (SELECT 1 + (m + k.id) %% 9) AS x(c)
"""
_ROLL_UP = """
INSERT INTO {table} (series, dimension, key, window_start, n_messages, n_negative, n_neutral, n_positive, sum_score)
SELECT series, dimension, key, date_trunc('{period}', window_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       sum(n_messages), sum(n_negative), sum(n_neutral), sum(n_positive), sum(sum_score)
FROM trend_windows WHERE series = 'live' AND window_start >= %(start)s AND window_start < %(end)s GROUP BY 1, 2, 3, 4
"""


def _prepare(engine: Engine, keys_per_minute: int) -> int:
    """The text pool and the trend keys the generated rows draw from; returns the pool's size."""
    pool = _texts()
    with pooled(engine) as raw:
        raw.execute("CREATE TABLE growth_texts (id int PRIMARY KEY, text text NOT NULL)")
        raw.execute("CREATE TABLE growth_keys (id int PRIMARY KEY, dimension text NOT NULL, key text NOT NULL)")
        with raw.cursor() as cur, cur.copy("COPY growth_texts (id, text) FROM STDIN") as copy:
            for i, body in enumerate(pool):
                copy.write_row((i, body))
        keys = [("topic", t) for t in TOPICS] + [("source", f"growth-{i}") for i in range(7)]
        keys += [("ticker", f"T{i:03d}") for i in range(max(0, keys_per_minute - len(keys)))]
        with raw.cursor() as cur, cur.copy("COPY growth_keys (id, dimension, key) FROM STDIN") as copy:
            for i, (dimension, key) in enumerate(keys):
                copy.write_row((i, dimension, key))
        raw.commit()
    return len(pool)


def _fill_day(engine: Engine, day: date, number: int, rows: int, pool: int) -> float:
    """One simulated day of messages, texts, minute windows and their roll-ups, on two connections at once
    (the messages on one, the rest on the other); returns the seconds."""
    started = time.perf_counter()
    start = partitions.day_start(day)
    params = {"rows": rows, "start": start, "first_id": FIRST_ID + number * rows, "topics": list(TOPICS),
              "pool": pool, "end": start + timedelta(days=1)}
    with pooled(engine) as raw:
        with raw.cursor() as cur:  # as the sink would, should retention not have made them ahead
            partitions.lock_days(cur, [(t, (day - partitions.EPOCH_DAY).days)
                                       for t in ("classified_messages", "message_texts")])
        raw.commit()

    def run(statements: list[str]) -> None:
        with pooled(engine) as raw:
            for statement in statements:
                raw.execute(statement, params)
                raw.commit()

    with ThreadPoolExecutor(2) as pool_:
        done = [pool_.submit(run, [_GENERATE_MESSAGES]),
                pool_.submit(run, [_GENERATE_TEXTS, _GENERATE_MINUTES, _ROLL_UP.format(table="trend_hourly", period="hour"),
                                   _ROLL_UP.format(table="trend_daily", period="day")])]
        for future in done:
            future.result()
    return time.perf_counter() - started


def _settle(engine: Engine, day: date) -> float:
    """What a day of live writes leaves done: the day's partitions and the trend tables vacuumed and
    analysed (autovacuum's work, which a day compressed into a minute would otherwise leave running
    beside the next measurement), and a checkpoint. Returns the seconds."""
    started = time.perf_counter()
    tables = [day_partition("classified_messages", day), day_partition("message_texts", day), "trend_windows",
              "trend_hourly", "trend_daily"]
    with pooled(engine) as raw:
        raw.autocommit = True
        try:
            raw.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")
            try:
                raw.execute("CHECKPOINT")
            except psycopg.errors.InsufficientPrivilege:
                pass  # a role without pg_checkpoint: the server's own checkpoints will do
        finally:
            raw.autocommit = False
    return time.perf_counter() - started


def _day_bytes(engine: Engine, day: date) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_total_relation_size(:a) + pg_total_relation_size(:b)"), {
            "a": day_partition("classified_messages", day), "b": day_partition("message_texts", day)}).scalar_one())


def _message_table_bytes(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i "
            "WHERE i.inhparent IN ('classified_messages'::regclass, 'message_texts'::regclass)")).scalar_one())


def _trend_bytes(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_total_relation_size('trend_windows') + "
                                     "pg_total_relation_size('trend_hourly') + pg_total_relation_size('trend_daily')")
                                ).scalar_one())


def _feed(texts: list[str], prefix: str, start: datetime, spacing_s: float = 1.0) -> list[bytes]:
    return [json.dumps({"id": f"{prefix}-{i}", "source": "bench", "text": t,
                        "published_at": (start + timedelta(seconds=i * spacing_s)).isoformat()}).encode()
            for i, t in enumerate(texts)]


def _sink_pairs(full: Engine, empty: Engine, settings: Settings, scorer: stages.Scorer, texts: list[str], tag: str,
                start: datetime, pairs: int = SINK_PAIRS) -> tuple[list[float], list[float]]:
    """The sink (`bench.measure_sink_alone`) on the same fresh messages in the full database and in an
    empty one, alternately (which goes first alternates too), so that both meet the same machine; returns
    the rows/s of each run, full then empty."""
    rates: dict[int, list[float]] = {0: [], 1: []}
    for attempt in range(pairs):
        _, _, batches = measure_pipeline(scorer, _feed(texts, f"{tag}{attempt}", start + timedelta(hours=attempt)),
                                         settings.micro_batch_size)
        for which in ((0, 1) if attempt % 2 else (1, 0)):
            rates[which].append(measure_sink_alone((full, empty)[which], batches, settings.window_seconds,
                                                   f"growth-sink-{tag}"))
    return rates[0], rates[1]


def _backend_pids(engine: Engine) -> list[int]:
    """The Postgres backends serving the end-to-end run's worker and writer."""
    with engine.connect() as conn:
        return [int(p) for p in conn.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = :a"),
            {"a": E2E_APPLICATION}).scalars()]


def measure_cpu(settings: Settings, engine: Engine, bootstrap: str, database_url: str, texts: list[str],
                start: datetime, run_id: str) -> dict[str, float | None]:
    """CPU seconds per 1,000 messages of each process of the host end-to-end run: `finsentry worker
    --zero-cost-model` (worker, and its writer process), the Postgres backends of this database and the
    broker, from the first message produced to the last one counted. None: not on this host."""
    names = {"social_topic": f"growth-{run_id}", "news_topic": f"growth-news-{run_id}",
             "dead_letter_topic": f"growth-dlq-{run_id}", "trend_series": f"growth-e2e-{run_id}",
             "touched_topic": f"growth-windows-{run_id}"}
    ensure_topics(bootstrap, [names["social_topic"], names["news_topic"], names["dead_letter_topic"]],
                  settings.topic_partitions)
    port = free_port()
    tagged = make_url(database_url).update_query_dict({"application_name": E2E_APPLICATION})
    env = child_env(bootstrap, tagged.render_as_string(hide_password=False), port, 0)
    env |= {f"FINSENTRY_{k.upper()}": v for k, v in names.items()}
    env |= {"FINSENTRY_MICRO_BATCH_SIZE": str(settings.micro_batch_size), "FINSENTRY_LOG_FORMAT": "text"}
    worker = subprocess.Popen([sys.executable, "-m", "finsentry.cli", "worker", "--zero-cost-model", "--no-detector",
                               "--group", f"growth-{run_id}"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    last: dict[int, float] = {}
    first: dict[int, float] = {}
    sampling = threading.Event()

    def sample_backends() -> None:  # a backend that exits takes its CPU time along: keep the last seen
        while not sampling.is_set():
            for pid in _backend_pids(engine):
                seconds = cpu_seconds(pid)
                if seconds is not None:
                    first.setdefault(pid, seconds)
                    last[pid] = seconds
            sampling.wait(0.25)

    try:
        _wait(lambda: ready(port), 180)

        def writers() -> list[int]:
            return [p for p in children(worker.pid) if "spawn_main" in cmdline(p)]  # not the resource tracker

        _wait(lambda: bool(writers()), 30)
        writer = writers()
        broker_port = int(bootstrap.split(",")[0].rsplit(":", 1)[1])
        broker = listening_pid(broker_port)
        pids = {"worker": [worker.pid], "writer": writer, "broker": [broker] if broker else []}
        before = {name: [cpu_seconds(p) for p in ps] for name, ps in pids.items()}
        for pid in _backend_pids(engine):
            seconds = cpu_seconds(pid)
            if seconds is not None:
                first[pid] = last[pid] = seconds
        sampler = threading.Thread(target=sample_backends, daemon=True)
        sampler.start()
        produce(bootstrap, names["social_topic"], _feed(texts, f"e2e-{run_id}", start), total=len(texts),
                progress=False)
        _wait(lambda: _counted(engine, names["trend_series"]) >= len(texts), 600, interval_s=0.2)
        after = {name: [cpu_seconds(p) for p in ps] for name, ps in pids.items()}
        sampling.set()
        sampler.join()
    finally:
        stop_child(worker, 60)
    per_1000 = 1000 / len(texts)
    result: dict[str, float | None] = {}
    for name in pids:
        pairs = [(b, a) for b, a in zip(before[name], after[name], strict=True) if b is not None and a is not None]
        result[name] = round(sum(a - b for b, a in pairs) * per_1000, 4) if pairs else None
    result["postgres"] = round(sum(last[p] - first[p] for p in last) * per_1000, 4) if last else None
    return result


def _counted(engine: Engine, series: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT coalesce(sum(n_messages), 0) FROM trend_windows WHERE series = :s "
                                     "AND dimension = 'topic'"), {"s": series}).scalar_one())


def _wait(condition: Any, timeout_s: float, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("growth benchmark step did not finish in time")
        time.sleep(interval_s)


def run_growth(settings: Settings, server_url: str, bootstrap: str, sizes: GrowthSizes = GrowthSizes(),
               today: date | None = None, progress: bool = True) -> dict[str, Any]:
    """Every figure of `finsentry bench --growth`, from one run in a scratch database."""
    if sizes.days < sizes.horizon_days + 3:
        raise ValueError("days must be at least horizon_days + 3: the tables fill, then retention drops days")
    run_id = uuid.uuid4().hex[:8]
    horizons = Horizons(sizes.horizon_days, sizes.horizon_days, sizes.horizon_days)
    first_day = (today or datetime.now(timezone.utc).date()) - timedelta(days=sizes.days)  # the last is yesterday
    peak_day = sizes.horizon_days + 1  # the first day after which the tables hold horizon_days + 2 days
    zero = ZeroCostClassifier(settings.model_dir)
    texts = bench_texts(max(sizes.sink_msgs, sizes.e2e_msgs))

    def say(message: str) -> None:
        if progress:
            print(f"growth {time.strftime('%H:%M:%S')}: {message}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    with scratch_database(server_url) as url:
        engine = make_engine(url)
        try:
            pool = _prepare(engine, sizes.keys_per_minute)
            apply_retention(engine, horizons, partitions.day_start(first_day), days_ahead=3)  # the scheduler, day 0
            kept: dict[date, int] = {}
            sink_full: list[float] = []
            sink_empty: list[float] = []
            fill_seconds: list[float] = []
            settle_seconds: list[float] = []
            day_bytes: list[int] = []
            runs: list[dict[str, Any]] = []
            rows_max = 0
            for number in range(sizes.days):
                day = first_day + timedelta(days=number)
                fill_seconds.append(_fill_day(engine, day, number, sizes.rows_per_day, pool))
                settle_seconds.append(_settle(engine, day))
                kept[day] = kept.get(day, 0) + sizes.rows_per_day
                day_bytes.append(_day_bytes(engine, day))
                if number == peak_day:  # the sink at the most rows, and beside it on an empty database
                    with scratch_database(server_url) as empty_url:
                        empty_engine = make_engine(empty_url)
                        apply_retention(empty_engine, horizons, partitions.day_start(day), days_ahead=0)
                        _settle(empty_engine, day)
                        sink_full, sink_empty = _sink_pairs(engine, empty_engine, settings, zero,
                                                            texts[: sizes.sink_msgs], f"s{run_id}",
                                                            partitions.day_start(day) + timedelta(hours=6))
                        empty_engine.dispose()
                    kept[day] += SINK_PAIRS * sizes.sink_msgs
                    say(f"sink at {sum(kept.values()):,} rows: {max(sink_full):.0f} rows/s, on an empty "
                        f"database {max(sink_empty):.0f} rows/s")
                rows_max = max(rows_max, sum(kept.values()))
                now = partitions.day_start(day + timedelta(days=1)) + timedelta(minutes=30)
                clock = time.perf_counter()
                run = apply_retention(engine, horizons, now)  # as the scheduler's first run after midnight
                seconds = time.perf_counter() - clock
                dropped_days = [d for d in kept if f"classified_messages_p{d:%Y%m%d}" in run.dropped]
                for d in dropped_days:
                    del kept[d]
                runs.append({"day": number, "seconds": round(seconds, 3), "drop_seconds": round(run.drop_seconds, 3),
                             "minute_seconds": round(run.minute_seconds, 3), "dropped": run.dropped,
                             "minute_windows_deleted": run.minute_windows_deleted, "rows_after": sum(kept.values())})
                say(f"day {number + 1}/{sizes.days} filled in {fill_seconds[-1]:.1f} s; retention {seconds:.2f} s, "
                    f"dropped {len(dropped_days)} day(s); {sum(kept.values()):,} rows kept")
            bytes_after = _message_table_bytes(engine)
            trend_bytes = _trend_bytes(engine)
            say("host end-to-end run for CPU per message")
            cpu = measure_cpu(settings, engine, bootstrap, url, texts[: sizes.e2e_msgs],
                              partitions.day_start(first_day + timedelta(days=sizes.days - 1)) + timedelta(hours=12),
                              run_id)
        finally:
            engine.dispose()
    dropping = [r for r in runs if any(name.startswith("classified_messages") for name in r["dropped"])]
    days_dropped = sum(sum(name.startswith("classified_messages") for name in r["dropped"]) for r in dropping)
    bytes_per_day = round(sum(day_bytes) / len(day_bytes))
    return {
        "partitioned": True,
        "rows_max": rows_max,
        "rows_per_day": sizes.rows_per_day,
        "sink_rows_per_s_empty": round(max(sink_empty), 1),
        "sink_rows_per_s_full": round(max(sink_full), 1),
        "sink_full_over_empty": round(max(sink_full) / max(sink_empty), 3),
        "sink_runs": {"full": [round(r, 1) for r in sink_full], "empty": [round(r, 1) for r in sink_empty]},
        "retention_seconds_per_day": round(sum(r["seconds"] for r in dropping) / days_dropped, 3) if days_dropped
        else None,
        "days_simulated": sizes.days,
        "horizon_days": sizes.horizon_days,
        "bytes_per_day": bytes_per_day,
        "bytes_after": bytes_after,
        "bytes_after_over_bytes_per_day": round(bytes_after / bytes_per_day, 2),
        "trend_bytes_after": trend_bytes,
        "cpu_s_per_1000_msgs": cpu,
        "fill_seconds_per_day": [round(s, 1) for s in fill_seconds],
        "vacuum_seconds_per_day": [round(s, 1) for s in settle_seconds],
        "retention_runs": runs,
        "messages": {"sink": sizes.sink_msgs, "e2e": sizes.e2e_msgs},
        "seconds": round(time.perf_counter() - started, 1),
        "run_id": run_id,
    }
