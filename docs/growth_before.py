"""The "before" figures of `finsentry bench --growth`, on the schema before partitions (migration 0005).

Not part of the package: it runs the code of a checkout at revision b9ce202 (the one issue 23 started
from), so it measures that version's sink, retention (UPDATE ... SET text = NULL) and worker:

    git archive b9ce202 | tar -x -C /tmp/before
    cd /tmp/before && DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
        KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 PYTHONPATH=. python /path/to/docs/growth_before.py

It fills a scratch database (dropped afterwards) as `--growth` does: the same rows per day, generated
in SQL (increasing ids, times spread over the day, the same real tweet texts), the same minute
windows, each day vacuumed, analysed and checkpointed; measures the sink on the full table and on an
empty database, alternately on the same messages; then runs that version's retention once
with a horizon that reaches the first simulated day (its days are aligned to the start time, so the
UPDATE reaches that day and a few minutes of the next: the seconds are scaled to one day's rows); and
reads the CPU seconds per 1,000 messages of that version's host end-to-end run. One JSON line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, create_engine, make_url, text

# The checkout's own modules (run from its folder, PYTHONPATH=.).
from config.settings import Settings
from models.classifier import ZeroCostClassifier
from models.dataset import SENTIMENT_DIR, TOPIC_DIR, read_labelled_csv
from workers.ingest.kafka_io import ensure_topics
from workers.ingest.processes import child_env, ready
from workers.lifecycle.retention import apply_retention
from workers.services.db import make_engine, migrate, sqlalchemy_url
from workers.services.embedded import free_port
from workers.tools.bench import bench_texts, measure_pipeline, measure_sink_alone
from workers.tools.replay import produce

TOPICS = ("Analyst Update", "Fed | Central Banks", "Company | Product News", "Treasuries | Corporate Debt",
          "Dividend", "Earnings", "Energy | Oil", "Financials", "Currencies", "General News | Opinion",
          "Gold | Metals | Materials", "IPO", "Legal | Regulation", "M&A | Investments", "Macro", "Markets",
          "Politics", "Personnel Change", "Stock Commentary", "Stock Movement")
FIRST_ID = 1_790_000_000_000_000_000
E2E_APPLICATION = "finsentry-growth-e2e"
ROWS_PER_DAY = int(os.environ.get("GROWTH_ROWS_PER_DAY", 4_200_000))
DAYS = int(os.environ.get("GROWTH_DAYS", 5))
SINK_MSGS = int(os.environ.get("GROWTH_SINK_MSGS", 20_000))


@contextmanager
def pooled(engine: Engine) -> Iterator[Any]:
    """The psycopg connection inside one of the engine's (this checkout has no helper for it)."""
    held = engine.raw_connection()
    try:
        yield held.driver_connection
    finally:
        held.close()


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    server = make_url(sqlalchemy_url(server_url))
    name = f"finsentry_before_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = server.set(database=name).render_as_string(hide_password=False)
        migrate(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def prepare(engine: Engine) -> int:
    """The same text pool and trend keys as `finsentry bench --growth`."""
    pool = {ex.text for ex in read_labelled_csv(TOPIC_DIR / "train.csv", "topic")}
    pool |= {ex.text for ex in read_labelled_csv(SENTIMENT_DIR / "train.csv", "sentiment")}
    texts = sorted(pool)
    with pooled(engine) as raw:
        raw.execute("CREATE TABLE growth_texts (id int PRIMARY KEY, text text NOT NULL)")
        raw.execute("CREATE TABLE growth_keys (id int PRIMARY KEY, dimension text NOT NULL, key text NOT NULL)")
        with raw.cursor() as cur, cur.copy("COPY growth_texts (id, text) FROM STDIN") as copy:
            for i, body in enumerate(texts):
                copy.write_row((i, body))
        keys = [("topic", t) for t in TOPICS] + [("source", f"growth-{i}") for i in range(7)]
        keys += [("ticker", f"T{i:03d}") for i in range(300 - len(keys))]
        with raw.cursor() as cur, cur.copy("COPY growth_keys (id, dimension, key) FROM STDIN") as copy:
            for i, (dimension, key) in enumerate(keys):
                copy.write_row((i, dimension, key))
        raw.commit()
    return len(texts)


# The rows of `finsentry bench --growth`, with the text, link and author in the one table of 0005.
_GENERATE = """
INSERT INTO classified_messages (message_key, kind, source, external_id, published_at, window_start, language, topic,
    topic_prob, sentiment, p_negative, p_neutral, p_positive, sentiment_score, tickers, model_version, kafka_topic,
    kafka_partition, kafka_offset, classified_at, text, url, author)
SELECT 'growth:' || (%(first_id)s + n)::text, 'social', 'growth-' || n %% 7, (%(first_id)s + n)::text, ts,
       date_bin('1 minute', ts, timestamptz 'epoch'), 'en', (%(topics)s::text[])[1 + n %% 20],
       0.4 + (n %% 60) / 100.0, (ARRAY['negative', 'neutral', 'positive'])[1 + (n / 7) %% 3],
       0.1 + (n %% 5) / 10.0, 0.2, 0.7 - (n %% 5) / 10.0, 0.6 - (n %% 5) / 5.0,
       CASE WHEN n %% 3 = 0 THEN ARRAY['T' || lpad((n %% 500)::text, 3, '0')] ELSE '{}'::text[] END,
       'fs-a0cb45f9748b', 'finsentry.social', (n %% 12)::int, %(first_id)s + n, ts + interval '0.2 second',
       p.text, NULL, '@user' || n %% 100000
FROM generate_series(0, %(rows)s - 1) AS n,
     LATERAL (SELECT %(start)s + n * (86400.0 / %(rows)s) * interval '1 second') AS t(ts),
     growth_texts p WHERE p.id = n %% %(pool)s
"""
_MINUTES = """
INSERT INTO trend_windows (series, dimension, key, window_start, window_seconds, n_messages, n_negative, n_neutral,
                           n_positive, sum_score)
SELECT 'live', k.dimension, k.key, date_bin('1 minute', %(start)s, timestamptz 'epoch') + m * interval '1 minute', 60,
       c, c / 4, c / 2, c - c / 4 - c / 2, c * 0.05
FROM generate_series(0, 1439) AS m, growth_keys k, LATERAL (SELECT 1 + (m + k.id) %% 9) AS x(c)
"""


def fill_day(engine: Engine, start: datetime, number: int, rows: int, pool: int) -> float:
    clock = time.perf_counter()
    params = {"rows": rows, "start": start, "first_id": FIRST_ID + number * rows, "topics": list(TOPICS), "pool": pool}
    with pooled(engine) as raw:
        for statement in (_GENERATE, _MINUTES):
            raw.execute(statement, params)
            raw.commit()
    return time.perf_counter() - clock


def settle(engine: Engine) -> float:
    """As `--growth` does after each day: vacuum and analyse what was written, then a checkpoint."""
    clock = time.perf_counter()
    with pooled(engine) as raw:
        raw.autocommit = True
        raw.execute("VACUUM (ANALYZE) classified_messages, trend_windows")
        raw.execute("CHECKPOINT")
        raw.autocommit = False
    return time.perf_counter() - clock


def table_bytes(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_total_relation_size('classified_messages')")).scalar_one())


def feed(texts: list[str], prefix: str, start: datetime) -> list[bytes]:
    return [json.dumps({"id": f"{prefix}-{i}", "source": "bench", "text": t,
                        "published_at": (start + timedelta(seconds=i)).isoformat()}).encode()
            for i, t in enumerate(texts)]


def sink_pairs(full: Engine, empty: Engine, settings: Settings, scorer: Any, texts: list[str],
               start: datetime) -> tuple[list[float], list[float]]:
    """As `--growth`: the same fresh messages into the full and an empty database, alternately, 3 times."""
    rates: dict[int, list[float]] = {0: [], 1: []}
    for attempt in range(3):
        _, _, batches = measure_pipeline(scorer, feed(texts, f"s{attempt}", start + timedelta(hours=attempt)),
                                         settings.micro_batch_size)
        for which in ((0, 1) if attempt % 2 else (1, 0)):
            rates[which].append(measure_sink_alone((full, empty)[which], batches, settings.window_seconds, "sink"))
    return rates[0], rates[1]


def cpu_seconds(pid: int) -> float | None:
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        found += [int(c) for c in open(f"/proc/{pid}/task/{task}/children").read().split()]
    return [c for c in found if "spawn_main" in open(f"/proc/{c}/cmdline").read()]


def listening_pid(port: int) -> int | None:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                for fd in os.listdir(f"/proc/{entry}/fd"):
                    target = os.readlink(f"/proc/{entry}/fd/{fd}")
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        return int(entry)
            except OSError:
                continue
    return None


def backends(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [int(p) for p in conn.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = :a"),
            {"a": E2E_APPLICATION}).scalars()]


def counted(engine: Engine, series: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT coalesce(sum(n_messages), 0) FROM trend_windows WHERE series = :s "
                                     "AND dimension = 'topic'"), {"s": series}).scalar_one())


def wait(condition: Any, timeout_s: float, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("step did not finish in time")
        time.sleep(interval_s)


def measure_cpu(settings: Settings, engine: Engine, bootstrap: str, url: str, texts: list[str],
                start: datetime) -> dict[str, float | None]:
    """As `workers.tools.growth.measure_cpu`, with this checkout's worker."""
    run_id = uuid.uuid4().hex[:8]
    names = {"social_topic": f"before-{run_id}", "news_topic": f"before-news-{run_id}",
             "dead_letter_topic": f"before-dlq-{run_id}", "trend_series": f"before-e2e-{run_id}",
             "touched_topic": f"before-windows-{run_id}"}
    ensure_topics(bootstrap, [names["social_topic"], names["news_topic"], names["dead_letter_topic"]],
                  settings.topic_partitions)
    port = free_port()
    tagged = make_url(url).update_query_dict({"application_name": E2E_APPLICATION}).render_as_string(False)
    env = child_env(bootstrap, tagged, port, 0) | {f"FINSENTRY_{k.upper()}": v for k, v in names.items()}
    env |= {"FINSENTRY_MICRO_BATCH_SIZE": str(settings.micro_batch_size), "FINSENTRY_LOG_FORMAT": "text"}
    worker = subprocess.Popen([sys.executable, "-m", "finsentry.cli", "worker", "--zero-cost-model", "--no-detector",
                               "--group", f"before-{run_id}"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid in backends(engine):
                seconds = cpu_seconds(pid)
                if seconds is not None:
                    first.setdefault(pid, seconds)
                    last[pid] = seconds
            done.wait(0.25)

    try:
        wait(lambda: ready(port), 180)
        pids = {"worker": [worker.pid], "writer": children(worker.pid),
                "broker": [p] if (p := listening_pid(int(bootstrap.rsplit(":", 1)[1]))) else []}
        before = {name: [cpu_seconds(p) for p in ps] for name, ps in pids.items()}
        for pid in backends(engine):
            seconds = cpu_seconds(pid)
            if seconds is not None:
                first[pid] = last[pid] = seconds
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        produce(bootstrap, names["social_topic"], feed(texts, f"e2e-{run_id}", start), total=len(texts),
                progress=False)
        wait(lambda: counted(engine, names["trend_series"]) >= len(texts), 600, interval_s=0.2)
        after = {name: [cpu_seconds(p) for p in ps] for name, ps in pids.items()}
        done.set()
        sampler.join()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    per_1000 = 1000 / len(texts)
    result: dict[str, float | None] = {
        name: round(sum(a - b for b, a in zip(before[name], after[name]) if a is not None and b is not None)
                    * per_1000, 4) if pids[name] else None for name in pids}
    result["postgres"] = round(sum(last[p] - first[p] for p in last) * per_1000, 4) if last else None
    return result


def main() -> None:
    from config.settings import get_settings

    settings = get_settings()
    assert settings.database_url is not None and settings.kafka_bootstrap_servers is not None
    server = settings.database_url.get_secret_value()
    bootstrap = settings.kafka_bootstrap_servers
    started = time.perf_counter()
    start_now = datetime.now().astimezone().replace(microsecond=0)
    first = start_now - timedelta(days=DAYS)  # day i: [first + i days, first + (i + 1) days)
    zero = ZeroCostClassifier(settings.model_dir)
    texts = bench_texts(SINK_MSGS)
    with scratch_database(server) as url:
        engine = make_engine(url)
        pool = prepare(engine)
        day_bytes, fills, settles = [], [], []
        previous = table_bytes(engine)
        for number in range(DAYS):
            fills.append(fill_day(engine, first + timedelta(days=number), number, ROWS_PER_DAY, pool))
            settles.append(settle(engine))
            now_bytes = table_bytes(engine)
            day_bytes.append(now_bytes - previous)
            previous = now_bytes
            print(f"day {number + 1}/{DAYS}: {fills[-1]:.1f} s", file=sys.stderr, flush=True)
        rows_max = DAYS * ROWS_PER_DAY + 3 * SINK_MSGS
        with scratch_database(server) as empty_url:
            empty_engine = make_engine(empty_url)
            settle(empty_engine)
            full, empty = sink_pairs(engine, empty_engine, settings, zero, texts,
                                     first + timedelta(days=DAYS - 1, hours=6))
            empty_engine.dispose()
        print(f"sink full {full}, empty {empty}", file=sys.stderr, flush=True)
        settle(engine)
        clock = time.perf_counter()
        reached = apply_retention(engine, DAYS - 1)  # texts published before now - (DAYS - 1) days: day 0 and a bit
        retention_s = time.perf_counter() - clock
        time.sleep(2)  # each backend reports its statistics at most once a second
        with engine.connect() as conn:
            dead = conn.execute(text("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = "
                                     "'classified_messages'")).scalar()
        bytes_after = table_bytes(engine)
        cpu = measure_cpu(settings, engine, bootstrap, url, bench_texts(SINK_MSGS),
                                  first + timedelta(days=DAYS - 1, hours=12))
        engine.dispose()
    print(json.dumps({
        "partitioned": False, "rows_max": rows_max, "rows_per_day": ROWS_PER_DAY,
        "sink_rows_per_s_empty": round(max(empty), 1), "sink_rows_per_s_full": round(max(full), 1),
        "sink_full_over_empty": round(max(full) / max(empty), 3),
        "sink_runs": {"full": [round(r, 1) for r in full], "empty": [round(r, 1) for r in empty]},
        "retention_rows": reached, "retention_seconds": round(retention_s, 1),
        "retention_rows_per_s": round(reached / retention_s, 1),
        "retention_seconds_per_day": round(retention_s * ROWS_PER_DAY / reached, 1),
        "dead_tuples_after_retention": dead, "days_simulated": DAYS, "horizon_days": None,
        "bytes_per_day": round(sum(day_bytes) / len(day_bytes)), "bytes_after": bytes_after,
        "cpu_s_per_1000_msgs": cpu, "fill_seconds_per_day": [round(s, 1) for s in fills],
        "vacuum_seconds_per_day": [round(s, 1) for s in settles],
        "seconds": round(time.perf_counter() - started, 1),
    }), flush=True)


if __name__ == "__main__":
    main()
