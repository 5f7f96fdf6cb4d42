"""One re-fine-tuning run: build the data, train a challenger, evaluate it beside the champion, gate it.

Artifacts are content-addressed folders (<models_root>/<version>), verified at load. The challenger
and the champion are scored on the same frozen evaluation set (the seeded dev split of the shared
data) and on a held-back fifth of the analysts' corrections, which the challenger did not train on.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert

from models.artifacts import CARD, CHECKSUMS, CONFIG, TOKENIZER, WEIGHTS, verify_artifact
from models.behaviour import pass_rates
from models.dataset import Example, topic_names
from models.training import TrainConfig, behaviour_of_model_dir, evaluate_model_dir, train
from schemas.errors import UsageError
from schemas.predictions import SENTIMENTS
from schemas.tables import labels, model_versions
from workers.lifecycle import registry

log = logging.getLogger(__name__)

HELD_BACK_SHARE = 5  # one correction in five is held back for evaluation ...
MIN_CORRECTIONS_TO_HOLD_BACK = 10  # ... once there are this many
MIN_HELD_BACK_TO_GATE = 10  # a head's held-back corrections take part in the gate from this many


class LabelError(UsageError):
    """A corrections file that cannot be imported; nothing from it was written."""


@dataclass(frozen=True)
class Correction:
    task: str
    text: str
    label: str


def read_corrections(path: Path) -> list[Correction]:
    """Read a `task,text,label` CSV (label by name: negative/neutral/positive or a topic name).

    Every row is checked before anything is returned; the error lists each bad row by line number.
    """
    topics = topic_names()
    valid = {"sentiment": list(SENTIMENTS), "topic": topics}
    out: list[Correction] = []
    problems: list[str] = []
    try:
        content = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LabelError(f"{path}: cannot be read: {err}") from err
    with io.StringIO(content, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"task", "text", "label"} - set(reader.fieldnames or [])
        if missing:
            raise LabelError(f"{path} lacks the column(s) {sorted(missing)} (it has {reader.fieldnames})")
        for line, row in enumerate(reader, start=2):
            task, text, label = (row["task"] or "").strip(), (row["text"] or "").strip(), (row["label"] or "").strip()
            if task not in valid:
                problems.append(f"line {line}: task {task!r} is not 'sentiment' or 'topic'")
            elif not text:
                problems.append(f"line {line}: empty text")
            elif label not in valid[task]:
                problems.append(f"line {line}: {label!r} is not a {task} label (one of {valid[task]})")
            else:
                out.append(Correction(task, text, label))
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise LabelError(f"{path}: {len(problems)} bad row(s), nothing imported:\n  {shown}{more}")
    return out


def add_corrections(engine: Engine, items: list[Correction], analyst: str | None) -> int:
    """Upsert corrections; a new label for the same (task, text) replaces the old one."""
    if not items:
        return 0
    latest = {(c.task, c.text): c for c in items}  # the last row for a text wins within a file too
    stmt = insert(labels).values([{"task": c.task, "text": c.text, "label": c.label, "analyst": analyst}
                                  for c in latest.values()])
    stmt = stmt.on_conflict_do_update(
        constraint="uq_labels_task_text",
        set_={"label": stmt.excluded.label, "analyst": stmt.excluded.analyst, "created_at": stmt.excluded.created_at})
    with engine.begin() as conn:
        conn.execute(stmt)
    return len(latest)


def corrections(engine: Engine, topics: list[str]) -> list[Example]:
    """Analysts' labels as training examples (label names mapped to indices; unknown names skipped)."""
    out: list[Example] = []
    with engine.connect() as conn:
        for row in conn.execute(select(labels.c.task, labels.c.text, labels.c.label).order_by(labels.c.id)):
            task, label = str(row.task), str(row.label)
            names = topics if task == "topic" else list(SENTIMENTS)
            if label in names:
                out.append(Example(str(row.text), task, names.index(label), "corrections"))
    return out


def split_corrections(items: list[Example]) -> tuple[list[Example], list[Example]]:
    """(to train on, held back): a stable fifth by hash of the text, once there are enough of them."""
    if len(items) < MIN_CORRECTIONS_TO_HOLD_BACK:
        return items, []
    train_part: list[Example] = []
    held: list[Example] = []
    for ex in items:
        bucket = int(hashlib.sha256(f"{ex.task}\t{ex.text}".encode()).hexdigest()[:8], 16) % HELD_BACK_SHARE
        (held if bucket == 0 else train_part).append(ex)
    return train_part, held


def _held_back_failures(new: dict[str, Any], old: dict[str, Any], held: list[Example]) -> list[str]:
    failures = []
    for task, report in old.items():
        n = sum(1 for ex in held if ex.task == task)
        if n >= MIN_HELD_BACK_TO_GATE and new[task]["accuracy"] < report["accuracy"]:
            failures.append(f"held-back corrections ({task}, n={n}): accuracy {new[task]['accuracy']:.4f} "
                            f"vs champion {report['accuracy']:.4f}")
    return failures


def challenge(challenger: Path, champion: Path, dev_set: list[Example]) -> tuple[registry.GateResult, dict[str, Any]]:
    """Score both model folders on the same dev set and the behavioural suite, and gate the challenger."""
    new, old = evaluate_model_dir(challenger, dev_set), evaluate_model_dir(champion, dev_set)
    new_behaviour, old_behaviour = behaviour_of_model_dir(challenger), behaviour_of_model_dir(champion)
    verdict = registry.gate(new, old, challenger_behaviour=pass_rates(new_behaviour),
                            champion_behaviour=pass_rates(old_behaviour))
    return verdict, {"frozen_set": {"n": len(dev_set), "challenger_metrics": new, "champion_metrics": old},
                     "behaviour": {"challenger": new_behaviour, "champion": old_behaviour}}


def ship(candidate: Path, default_dir: Path, dev_set: list[Example]) -> tuple[registry.GateResult, dict[str, Any]]:
    """Replace the shipped default (a folder in the package) by `candidate` only if it passes the gate
    against it: the way a new default is chosen, with no decision by hand."""
    verdict, evaluation = challenge(candidate, default_dir, dev_set)
    if verdict.promote:
        verify_artifact(candidate)
        for name in (WEIGHTS, CONFIG, TOKENIZER, CHECKSUMS, CARD, "metrics.json"):
            shutil.copyfile(candidate / name, default_dir / name)
        verify_artifact(default_dir)
    return verdict, evaluation


def retrain_and_register(
    engine: Engine, models_root: Path, default_dir: Path, config: TrainConfig, progress: bool = False
) -> dict[str, Any]:
    """Fine-tune a challenger, compare it with the champion on the same data, register it, maybe promote."""
    champion, champion_version = registry.serving(engine, default_dir)
    fixes = corrections(engine, topic_names())
    to_train, held = split_corrections(fixes)
    models_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="train-", dir=models_root))
    if config.init_dir == "champion":
        config = replace(config, init_dir=str(champion))
    try:
        result = train(config, work, corrections=to_train, progress=progress)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # no half-written model folder is left behind
        raise
    final = models_root / result.version
    with engine.connect() as conn:
        known = conn.execute(select(model_versions.c.status).where(model_versions.c.version == result.version)).scalar()
    if known:
        shutil.rmtree(work)
        log.info("challenger %s is already registered (%s); nothing new", result.version, known)
        return {"version": result.version, "status": known, "reason": "already registered", "seconds": result.seconds}
    if final.exists():
        shutil.rmtree(work)
    else:
        work.rename(final)

    verdict, evaluation = challenge(final, champion, result.dev_set)
    evaluation["frozen_set"]["champion"] = champion_version
    failures = [] if verdict.promote else [verdict.reason]
    if held:
        new_held, old_held = evaluate_model_dir(final, held), evaluate_model_dir(champion, held)
        evaluation["held_back_corrections"] = {"n": len(held), "challenger": new_held, "champion": old_held}
        failures += _held_back_failures(new_held, old_held, held)
    promote = not failures
    reason = verdict.reason if promote else "; ".join(failures)
    with engine.begin() as conn:
        registry.register(
            conn, version=result.version, parent=champion_version, path=str(final),
            data_hash=json.dumps(result.data_hashes, sort_keys=True), metrics=result.metrics,
            evaluation=evaluation, status="champion" if promote else "rejected", reason=reason)
    log.info("registered %s as %s (%s)", result.version, "champion" if promote else "rejected", reason)
    return {"version": result.version, "status": "champion" if promote else "rejected", "reason": reason,
            "seconds": result.seconds, "corrections_trained": len(to_train), "corrections_held_back": len(held)}
