"""The two-terminal workflow with nothing exported: `finsentry worker` in one terminal, `finsentry replay`
in another, meeting on one local stack (broker and Postgres in the background); `status` shows it and
`down` stops it. Real processes throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.integration.helpers import posts, wait_for
from workers.services.db import make_engine
from workers.services.embedded import broker_answers, postgres_answers, read_stack, running_stack, stop_stack

pytestmark = pytest.mark.integration

UNSET = ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "FINSENTRY_KAFKA_BOOTSTRAP_SERVERS", "FINSENTRY_DATABASE_URL")


def finsentry(*argv: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "finsentry.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_a_worker_and_a_replay_in_two_terminals_meet_on_one_local_stack(tmp_path: Path, unique: str) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env |= {"FINSENTRY_DATA_DIR": str(data_dir), "FINSENTRY_METRICS_PORT": "-1",
            "FINSENTRY_DETECTOR_METRICS_PORT": "-1",
            "FINSENTRY_CONSUMER_GROUP": f"two-terminals-{unique}", "FINSENTRY_MICRO_BATCH_SIZE": "64"}
    messages = posts(20, f"two-{unique}")
    feed = tmp_path / "posts.jsonl"
    feed.write_text("".join(json.dumps(m) + "\n" for m in messages))
    worker = subprocess.Popen([sys.executable, "-m", "finsentry.cli", "worker"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # terminal 1
    try:
        wait_for(lambda: running_stack(data_dir) is not None, timeout_s=120, what="the worker to start the local stack")
        replay = finsentry("replay", str(feed), "--topic", "social", env=env)  # terminal 2
        assert replay.returncode == 0, replay.stderr[-2000:]
        assert json.loads(replay.stdout.strip().splitlines()[-1])["sent"] == 20
        assert "started the local stack" not in replay.stderr  # it joined the running one
        stack = read_stack(data_dir)
        assert stack is not None
        engine = make_engine(stack.database_url)

        def stored() -> int:
            with engine.connect() as conn:
                return int(conn.execute(text("SELECT count(*) FROM classified_messages WHERE external_id LIKE :p"),
                                        {"p": f"two-{unique}-%"}).scalar_one())

        wait_for(lambda: stored() == 20, timeout_s=120, what="the worker to store the replayed messages")
        engine.dispose()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
        assert running_stack(data_dir) is not None  # the stack outlives the commands that used it

        status = finsentry("status", env=env)
        assert status.returncode == 0 and json.loads(status.stdout)["bootstrap"] == stack.bootstrap
        down = finsentry("down", env=env)
        assert down.returncode == 0 and "stopped" in down.stdout
        assert not broker_answers(stack.bootstrap) and not postgres_answers(stack.database_url)
        assert read_stack(data_dir) is None
        assert finsentry("status", env=env).returncode == 1
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        stop_stack(data_dir)
