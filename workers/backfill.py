"""`finsentry backfill`: re-score history with a chosen model into a separate trend series.

Messages are read from a file (as `replay` reads them), run through the same pure stages as the
worker, and counted into `trend_windows` under their own series (default `backfill-<model version>`),
so a model can be compared with the live trends, or back-tested, without touching them. Re-running
the same backfill changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from tqdm import tqdm

from models.classifier import Classifier
from schemas.messages import Kind, RawMessage
from schemas.tables import model_versions
from workers import stages
from workers.replay import read_messages
from workers.sink import write_batch


def resolve_model(engine: Engine, model: str, default_dir: Path) -> Path:
    """A model folder, a registered version, or "default"."""
    if model == "default":
        return default_dir
    if Path(model).is_dir():
        return Path(model)
    with engine.connect() as conn:
        path = conn.execute(select(model_versions.c.path).where(model_versions.c.version == model)).scalar()
    if path is None:
        raise ValueError(f"model {model!r} is neither a folder nor a registered version (see the model_versions table)")
    return Path(path)


def backfill(
    engine: Engine, classifier: Classifier, source: Path, kind: Kind, window_seconds: int, series: str | None = None,
    chunk: int = 2048,
) -> dict[str, Any]:
    series = series or f"backfill-{classifier.version}"
    counted = dead = total = 0
    values = list(read_messages(source, kind))
    with tqdm(total=len(values), desc=f"backfill -> {series}", unit="msg") as bar:
        for start in range(0, len(values), chunk):
            raws = [RawMessage(kind, v, str(source), 0, start + i) for i, v in enumerate(values[start : start + chunk])]
            accepted, rejected = stages.decode(raws, datetime.now(timezone.utc))
            rows = [stages.to_row(c, window_seconds) for c in stages.classify(accepted, classifier)]
            counted += write_batch(engine, rows, window_seconds, series, store_messages=False)
            dead += len(rejected)
            total += len(raws)
            bar.update(len(raws))
    return {"series": series, "model_version": classifier.version, "messages": total, "counted": counted,
            "already_counted": total - dead - counted, "rejected": dead}
