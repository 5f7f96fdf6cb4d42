"""The model registry (`model_versions`): which model serves, promotion, rollback and the gate.

Exactly one row has status "champion" at a time; with none, the shipped default serves. Promotion and
rollback change the champion in one transaction and `NOTIFY finsentry_model` in it, so running workers
learn of the change when, and only when, it has committed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, select, text

from models.artifacts import ArtifactError, verify_artifact, version_of
from schemas.errors import FinsentryError
from schemas.tables import model_versions

log = logging.getLogger(__name__)

CHANNEL = "finsentry_model"
MAX_RECALL_DROP = 0.02
MAX_CAPABILITY_DROP = 0.02  # behavioural suite: pass rate points a challenger may lose on any capability
MAX_SLICE_DROP = 0.01  # a slice's accuracy and macro-F1 may each fall by at most a point (a dev split's noise)
# A small class (fewer dev texts than SMALL_CLASS, where one text is worth more than 2 points) that falls by more
# than the limit is handled worse only if chance would lose that many texts more rarely than CLASS_LOSS_ALPHA
# (a sign test), and in any case if it falls by more than MAX_SMALL_CLASS_DROP (or one text).
SMALL_CLASS = 50
CLASS_LOSS_ALPHA = 0.05
MAX_SMALL_CLASS_DROP = 0.15


class RegistryError(FinsentryError):
    """A registry operation that cannot be carried out (unknown version, nothing to roll back to)."""

    exit_code = 1


def sign_test(lost: int, gained: int) -> float:
    """One-sided exact sign test: the chance of losing at least `lost` of the `lost + gained` texts on which
    two equally good models disagree (each disagreement a fair coin)."""
    n = lost + gained
    return sum(math.comb(n, k) for k in range(lost, n + 1)) / 2 ** n if n else 1.0


@dataclass(frozen=True)
class GateResult:
    promote: bool
    reason: str


def gate(challenger: dict[str, Any], champion: dict[str, Any], max_recall_drop: float = MAX_RECALL_DROP,
         challenger_behaviour: dict[str, float] | None = None, champion_behaviour: dict[str, float] | None = None,
         max_capability_drop: float = MAX_CAPABILITY_DROP, max_slice_drop: float = MAX_SLICE_DROP) -> GateResult:
    """Promote only if no slice's accuracy or macro-F1 falls by more than `max_slice_drop`, no class is handled worse,
    and no capability of the behavioural suite loses more than `max_capability_drop` of its pass rate.

    The reports are per-slice, measured on the same evaluation set: a task ("sentiment") and, where a task
    has several domains, each domain ("sentiment/news", "sentiment/tweets"), so a challenger that gains on
    tweets and loses on news is refused. A class is handled worse when its recall falls by more than the
    limit (or one text of its support, whichever is more: on a small slice one text moves recall by several
    points) and its F1 falls by more than that too: a class's recall may be traded for its precision (a
    champion that labels most texts of a slice neutral has a high neutral recall there, and a challenger
    that stops doing so loses it), but not lost. On a class of fewer than `SMALL_CLASS` texts, where both
    reports name the texts each model got right (`hits`, from `evaluate_model_dir` on the same set: equal
    `digest`), the loss must also be more than chance: the texts only the champion got right against those
    only the challenger got right, an exact one-sided sign test at `CLASS_LOSS_ALPHA` (on 30 texts, 4 lost
    and 1 gained is p = 0.19; 8 lost and 1 gained, p = 0.02). The test cannot refuse a net loss of fewer
    than 5 texts, so a loss of more than `MAX_SMALL_CLASS_DROP` (or one text) is refused whatever it says.
    The behaviour arguments are {capability: pass rate} of both models on the suite's test half
    (`models.behaviour`).
    """
    failures: list[str] = []
    excused: list[str] = []  # small classes' losses within chance: in the reason either way, for the record
    summary: list[str] = []
    for name, old_rate in sorted((champion_behaviour or {}).items()):
        new_rate = (challenger_behaviour or {}).get(name, 0.0)
        summary.append(f"behaviour {name} {new_rate:.4f} vs {old_rate:.4f}")
        if old_rate - new_rate > max_capability_drop + 1e-9:
            failures.append(f"behaviour {name!r} fell by {(old_rate - new_rate) * 100:.1f} points "
                            f"({old_rate:.4f} to {new_rate:.4f})")
    for name in sorted(champion):
        new, old = challenger[name], champion[name]
        summary.append(f"{name} macro-F1 {new['macro_f1']:.4f} vs {old['macro_f1']:.4f}")
        for figure, words in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
            if figure in old and figure in new and old[figure] - new[figure] > max_slice_drop + 1e-9:
                failures.append(f"{name} {words} fell from {old[figure]:.4f} to {new[figure]:.4f}")
        paired = old.get("digest") is not None and old.get("digest") == new.get("digest")
        for label, old_class in old["per_class"].items():
            new_class = new["per_class"][label]
            drop = old_class["recall"] - new_class["recall"]
            support = old_class.get("support", 0)
            allowed = max(max_recall_drop, 1 / support) if support else max_recall_drop
            f1_drop = old_class["f1"] - new_class["f1"] if "f1" in old_class and "f1" in new_class else drop
            if drop <= allowed + 1e-9 or f1_drop <= allowed + 1e-9:
                continue
            finding = (f"{name} recall of {label!r} fell by {drop * 100:.1f} points ({old_class['recall']:.4f} to "
                       f"{new_class['recall']:.4f}), and its F1 by {f1_drop * 100:.1f}")
            if paired and "hits" in old_class and "hits" in new_class and 0 < support < SMALL_CLASS:
                lost = len(set(old_class["hits"]) - set(new_class["hits"]))
                gained = len(set(new_class["hits"]) - set(old_class["hits"]))
                p = sign_test(lost, gained)
                finding += f" ({lost} texts lost, {gained} gained: p = {p:.4f})"
                if p >= CLASS_LOSS_ALPHA and drop <= max(MAX_SMALL_CLASS_DROP, 1 / support) + 1e-9:
                    excused.append(f"within chance: {finding}")
                    continue
            failures.append(finding)
    if failures:
        return GateResult(False, "; ".join(failures + excused))
    return GateResult(True, "; ".join(summary + excused) + f"; no slice's accuracy or macro-F1 fell by more than "
                      f"{max_slice_drop * 100:g} point, no class's recall and F1 both fell by more than "
                      f"{max_recall_drop * 100:g} points (or one text; on a class of under {SMALL_CLASS} texts, beyond "
                      f"chance), no capability fell by more than {max_capability_drop * 100:g} points")


def champion_row(conn: Connection) -> Any:
    return conn.execute(select(model_versions).where(model_versions.c.status == "champion")).mappings().first()


def champion_version(engine: Engine) -> str | None:
    """The registered champion's version, from the table alone (no file is read)."""
    with engine.connect() as conn:
        return conn.execute(select(model_versions.c.version).where(model_versions.c.status == "champion")).scalar()


def serving(engine: Engine, default_dir: Path) -> tuple[Path, str]:
    """(folder, version) that should serve: the registered champion if it verifies, else the shipped default."""
    with engine.connect() as conn:
        row = champion_row(conn)
    if row:
        try:
            return Path(row["path"]), verify_artifact(Path(row["path"]))
        except ArtifactError as err:
            log.error("champion %s fails verification, serving the default: %s", row["version"], err)
    return default_dir, version_of(default_dir)


def list_versions(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(model_versions).order_by(model_versions.c.created_at)).mappings().all()
    return [dict(row) for row in rows]


def register(conn: Connection, **values: Any) -> None:
    """Insert a version row (status champion goes through `_make_champion` to keep one champion)."""
    status = values.pop("status")
    conn.execute(model_versions.insert().values(status="challenger", **values))
    if status == "champion":
        _make_champion(conn, values["version"])
    else:
        conn.execute(model_versions.update().where(model_versions.c.version == values["version"])
                     .values(status=status))


def promote(engine: Engine, version: str, reason: str = "promoted by hand") -> None:
    """Make a registered, verified version the champion (by hand: the gate is not applied)."""
    with engine.begin() as conn:
        row = conn.execute(select(model_versions).where(model_versions.c.version == version)).mappings().first()
        if row is None:
            raise RegistryError(f"no registered model version {version!r} (see `finsentry model list`)")
        if row["status"] == "champion":
            raise RegistryError(f"{version} is already the champion")
        verify_artifact(Path(row["path"]))
        _make_champion(conn, version, reason)


def rollback(engine: Engine) -> str:
    """Set the champion aside ("rolled_back") and bring back the one promoted before it, else the default."""
    with engine.begin() as conn:
        current = champion_row(conn)
        if current is None:
            raise RegistryError("no registered champion: the shipped default is serving already")
        previous = conn.execute(
            select(model_versions.c.version, model_versions.c.path)
            .where(model_versions.c.status == "retired", model_versions.c.promoted_at.is_not(None),
                   model_versions.c.promoted_at < current["promoted_at"])
            .order_by(model_versions.c.promoted_at.desc()).limit(1)
        ).first()
        conn.execute(model_versions.update().where(model_versions.c.version == current["version"])
                     .values(status="rolled_back", reason=f"rolled back; was: {current['reason']}"))
        if previous is None:
            _notify(conn, "default")
            return "default"
        verify_artifact(Path(previous.path))
        _make_champion(conn, previous.version, f"rollback from {current['version']}")
        return str(previous.version)


def _make_champion(conn: Connection, version: str, reason: str | None = None) -> None:
    # Serialise champion changes so that two promotions cannot both leave a champion.
    conn.execute(text("LOCK TABLE model_versions IN SHARE ROW EXCLUSIVE MODE"))
    conn.execute(model_versions.update().where(model_versions.c.status == "champion").values(status="retired"))
    values: dict[str, Any] = {"status": "champion", "promoted_at": func.clock_timestamp()}
    if reason:
        values["reason"] = reason
    conn.execute(model_versions.update().where(model_versions.c.version == version).values(**values))
    _notify(conn, version)


def _notify(conn: Connection, version: str) -> None:
    """Delivered to listeners when the transaction commits, not before."""
    conn.execute(select(func.pg_notify(CHANNEL, version)))
