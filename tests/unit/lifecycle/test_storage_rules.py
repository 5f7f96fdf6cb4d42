"""The storage lifecycle's pure rules: which days retention may drop, against what validation accepts."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from config.settings import Horizons
from schemas.tables import day_partition, partition_day
from workers.lifecycle.partitions import create_sql, day_of_us, droppable, to_date
from workers.tools.report import resolution

NOW = datetime(2026, 11, 22, 12, 30, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def test_day_partition_names_round_trip_and_other_names_are_not_day_partitions() -> None:
    assert day_partition("message_texts", date(2026, 1, 5)) == "message_texts_p20260105"
    assert partition_day("classified_messages_p20260105") == ("classified_messages", date(2026, 1, 5))
    assert partition_day("classified_messages_old") is None and partition_day("trend_windows_p20260105") is None
    assert "FROM ('2026-01-05T00:00:00+00:00') TO ('2026-01-06T00:00:00+00:00')" in create_sql("message_texts",
                                                                                              date(2026, 1, 5))


def test_a_day_is_dropped_once_wholly_older_than_the_horizon_plus_the_margin() -> None:
    horizons = Horizons(messages_days=10)
    oldest = horizons.oldest_message(NOW)
    assert oldest == NOW - 10 * DAY
    days = [date(2026, 11, d) for d in range(1, 23)]
    # Oldest accepted: 2026-11-12 12:30; minus the margin: 2026-11-11 12:30; days ending by then: up to the 10th.
    assert droppable(days, oldest) == [date(2026, 11, d) for d in range(1, 11)]
    midnight = datetime(2026, 11, 12, tzinfo=timezone.utc)  # the 10th ends exactly at the cutoff: it goes
    assert droppable(days, midnight) == [date(2026, 11, d) for d in range(1, 11)]
    assert droppable(days, midnight - timedelta(microseconds=1)) == [date(2026, 11, d) for d in range(1, 10)]


@given(now_s=st.integers(10**9, 2 * 10**9), horizon_days=st.integers(1, 400),
       age_s=st.floats(0, 1), delay_s=st.integers(0, int(Horizons.DROP_MARGIN.total_seconds())))
def test_no_day_that_validation_can_still_send_a_message_to_is_dropped(now_s: int, horizon_days: int, age_s: float,
                                                                       delay_s: int) -> None:
    """A message accepted at `now` (no older than the horizon) and written up to DROP_MARGIN later never
    finds its day dropped by a retention run at that later time."""
    horizons = Horizons(messages_days=horizon_days)
    now = datetime.fromtimestamp(now_s, timezone.utc)
    oldest = horizons.oldest_message(now)
    assert oldest is not None
    published = oldest + (now - oldest) * age_s  # anywhere from the horizon to now
    day = to_date(day_of_us(int(published.timestamp() * 1_000_000)))
    later = horizons.oldest_message(now + timedelta(seconds=delay_s))
    assert later is not None
    assert droppable([day], later) == []
    # ... and it is dropped once the day is older than the horizon plus the margin.
    end = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + DAY
    assert droppable([day], end + Horizons.DROP_MARGIN) == [day]


def test_texts_never_outlive_their_message() -> None:
    assert Horizons(messages_days=90, texts_days=30).effective_texts_days == 30
    assert Horizons(messages_days=20, texts_days=30).effective_texts_days == 20
    assert Horizons(messages_days=20, texts_days=0).effective_texts_days == 20  # 0: as long as the message
    assert Horizons(messages_days=0, texts_days=0).oldest_text(NOW) is None


def test_the_report_reads_the_coarsest_table_whose_rows_fit_a_bucket() -> None:
    assert resolution(1) == ("trend_windows", 1) and resolution(15) == ("trend_windows", 1)
    assert resolution(60) == ("trend_hourly", 60) and resolution(240) == ("trend_hourly", 60)
    assert resolution(1440) == ("trend_daily", 1440)
