"""The sink in its own process, against the real Postgres: it writes as the in-process sink does, a
child killed mid-stream is started again and the batch retried with nothing lost or counted twice, and
a batch the database refuses raises an error that names the cause, after which the child goes on."""

from __future__ import annotations

import dataclasses
import os
import signal

import pytest

from schemas.errors import RetryableError
from tests.integration.helpers import scalar
from tests.integration.ingest.test_sink import columns_for, stored_reference, trends
from workers.ingest.writer_process import SinkProcess, WriterError

pytestmark = pytest.mark.integration


def test_a_killed_writer_process_is_replaced_and_the_batch_retried(engine, classifier, unique, database_url):  # type: ignore[no-untyped-def]
    series = f"wp-{unique}"
    sink = SinkProcess(database_url, 60, series)
    sink.start()
    try:
        sink.add(columns_for(classifier, unique, 20))
        assert sink.flush() == 20 and sink.touched
        first_child = sink._process.pid
        os.kill(first_child, signal.SIGKILL)
        sink._process.join(10)

        batch = columns_for(classifier, unique, 20, start=10)  # half of it stored already
        sink.add(batch)
        with pytest.raises(RetryableError, match="writer process ended"):
            sink.flush()
        assert sink.flush() == 10  # the same batch, kept by the sink, on a new child
        assert sink._process.pid != first_child
    finally:
        sink.close()
    assert sink._process is None
    assert scalar(engine, "SELECT count(*) FROM classified_messages WHERE external_id LIKE :p", p=f"{unique}-%") == 30
    assert trends(engine, series) == stored_reference(engine, unique)


def test_a_refused_batch_raises_with_the_cause_and_the_child_goes_on(engine, classifier, unique, database_url):  # type: ignore[no-untyped-def]
    sink = SinkProcess(database_url, 60, f"wp-{unique}")
    try:
        good = columns_for(classifier, unique, 5)
        too_long = dataclasses.replace(good, kind=["x" * 40] * 5)  # classified_messages.kind is varchar(16)
        sink.start()
        child = sink._process.pid
        with pytest.raises(WriterError, match="StringDataRightTruncation"):
            sink.write([too_long])
        assert sink.write([good]) == 5 and sink._process.pid == child  # the same child goes on
    finally:
        sink.close()
