"""Model lifecycle against the registry table: which model serves, and one re-fine-tuning run.

Artifacts are content-addressed folders (<data_dir>/models/<version>), verified at load.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from models.artifacts import ArtifactError, verify_artifact
from models.dataset import Example
from models.training import TrainConfig, evaluate_model_dir, train
from schemas.predictions import SENTIMENTS
from schemas.tables import labels, model_versions

log = logging.getLogger(__name__)


def champion_dir(engine: Engine, default_dir: Path) -> Path:
    """The registered champion's folder if there is a verified one, else the shipped default."""
    with engine.connect() as conn:
        path = conn.execute(
            select(model_versions.c.path).where(model_versions.c.status == "champion")
            .order_by(model_versions.c.promoted_at.desc()).limit(1)
        ).scalar()
    if path:
        try:
            verify_artifact(Path(path))
            return Path(path)
        except ArtifactError as err:
            log.error("champion at %s fails verification, serving the default: %s", path, err)
    return default_dir


def corrections(engine: Engine, topics: list[str]) -> list[Example]:
    """Analysts' labels as training examples (label names mapped to indices; unknown names skipped)."""
    out: list[Example] = []
    with engine.connect() as conn:
        for row in conn.execute(select(labels.c.task, labels.c.text, labels.c.label)):
            task, label = str(row.task), str(row.label)
            names = topics if task == "topic" else list(SENTIMENTS)
            if label in names:
                out.append(Example(str(row.text), task, names.index(label)))
    return out


def _macro_f1(metrics: dict[str, Any]) -> float:
    return float(sum(metrics[t]["macro_f1"] for t in ("topic", "sentiment")) / 2)


def retrain_and_register(
    engine: Engine, models_root: Path, default_dir: Path, config: TrainConfig, progress: bool = False
) -> dict[str, Any]:
    """Fine-tune a challenger, compare it with the champion on the dev split, register it."""
    from models.dataset import topic_names

    champion = champion_dir(engine, default_dir)
    fixes = corrections(engine, topic_names())
    models_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="train-", dir=models_root))
    result = train(config, work, corrections=fixes, progress=progress)
    # Both models on the same frozen split: the challenger's dev set, which neither trained on.
    champion_metrics = evaluate_model_dir(champion, result.dev_set)
    final = models_root / result.version
    if final.exists():
        shutil.rmtree(work)
    else:
        work.rename(final)
    better = _macro_f1(result.metrics) >= _macro_f1(champion_metrics)
    status = "champion" if better else "rejected"
    reason = (f"mean dev macro-F1 {_macro_f1(result.metrics):.4f} vs champion {champion.name} "
              f"{_macro_f1(champion_metrics):.4f} on the same {len(result.dev_set)} dev texts")
    with engine.begin() as conn:
        if better:
            conn.execute(model_versions.update().where(model_versions.c.status == "champion")
                         .values(status="retired"))
        conn.execute(model_versions.insert().values(
            version=result.version, parent=champion.name, path=str(final),
            data_hash=json.dumps(result.data_hashes, sort_keys=True), metrics=result.metrics,
            status=status, reason=reason, promoted_at=func.now() if better else None))
    log.info("registered %s as %s (%s)", result.version, status, reason)
    return {"version": result.version, "status": status, "reason": reason, "seconds": result.seconds,
            "corrections": len(fixes)}
