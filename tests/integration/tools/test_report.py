"""`finsentry report` reads the resolution its buckets need: minutes for a day, the hourly roll-up for a
week (also where the minute windows are past their retention), the daily one for months."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from config.settings import Horizons
from tests.integration.helpers import columns_for
from workers.ingest.sink import write_batches
from workers.tools.report import write_report

pytestmark = pytest.mark.integration


def test_the_report_reads_minutes_hours_or_days_as_its_span_needs(engine, classifier, unique, tmp_path):  # type: ignore[no-untyped-def]
    series = f"report-{unique}"
    until = datetime(2031, 3, 20, 12, 0, tzinfo=timezone.utc)
    # 60 messages an hour apart over the last 2.5 days, written when the minute horizon (1 day) already
    # excluded the older ones: those are in the roll-ups only.
    columns = columns_for(classifier, unique, 60, step_s=3600, base=until - timedelta(hours=60))
    assert write_batches(engine, [columns], 60, series, horizons=Horizons(minute_windows_days=1), now=until).stored == 60
    topics = sorted(set(columns.topic))

    def report(since: timedelta) -> tuple[str, int]:
        result = write_report(engine, tmp_path / "r.png", since, series=series, topics=topics, until=until)
        return result["table"], result["bucket_minutes"]

    assert report(timedelta(hours=6)) == ("trend_windows", 5)
    assert report(timedelta(days=7)) == ("trend_hourly", 240)
    assert report(timedelta(days=90)) == ("trend_daily", 1440)
    from workers.tools.report import load_panels

    for since, total in ((timedelta(hours=6), 6), (timedelta(days=7), 60), (timedelta(days=90), 60)):
        panels, _ = load_panels(engine, until - since, until, series, topics, 10)
        assert sum(sum(p.volume) for p in panels) == total, since
