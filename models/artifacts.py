"""Model artifacts on disk: fp16 safetensors + config + tokenizer, checksummed and verified at load.

A model's version is content-addressed: "fs-" + the first 12 hex digits of its weights' sha256.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig

from models.network import TwoHeadClassifier
from schemas.errors import FinsentryError

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
CHECKSUMS = "SHA256SUMS"
CARD = "MODEL_CARD.md"


class ArtifactError(FinsentryError):
    """A model folder is missing a file or a file does not match its recorded checksum."""

    exit_code = 1


@dataclass(frozen=True)
class ModelMeta:
    topics: list[str]
    sentiments: list[str]
    max_length: int
    bert: dict[str, Any]
    topic_temperature: float = 1.0
    sentiment_temperature: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_artifact(
    out_dir: Path, network: TwoHeadClassifier, meta: ModelMeta, tokenizer_file: Path, card: str
) -> str:
    """Write the model folder and return its version."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in network.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS))
    (out_dir / CONFIG).write_text(json.dumps(asdict(meta), indent=2) + "\n")
    if tokenizer_file.resolve() != (out_dir / TOKENIZER).resolve():
        shutil.copyfile(tokenizer_file, out_dir / TOKENIZER)
    version = version_of(out_dir)
    (out_dir / CARD).write_text(card.replace("{version}", version))
    sums = {name: _sha256(out_dir / name) for name in (WEIGHTS, CONFIG, TOKENIZER)}
    (out_dir / CHECKSUMS).write_text("".join(f"{h}  {n}\n" for n, h in sums.items()))
    return version


def version_of(model_dir: Path) -> str:
    return "fs-" + _sha256(model_dir / WEIGHTS)[:12]


def verify_artifact(model_dir: Path) -> str:
    """Check every file against SHA256SUMS; return the version or raise ArtifactError."""
    sums_file = model_dir / CHECKSUMS
    if not sums_file.is_file():
        raise ArtifactError(f"{sums_file} is missing")
    for line in sums_file.read_text().splitlines():
        expected, name = line.split(maxsplit=1)
        path = model_dir / name
        if not path.is_file():
            raise ArtifactError(f"{path} is missing")
        actual = _sha256(path)
        if actual != expected:
            raise ArtifactError(f"{path}: sha256 {actual} does not match recorded {expected}")
    return version_of(model_dir)


def load_meta(model_dir: Path) -> ModelMeta:
    return ModelMeta(**json.loads((model_dir / CONFIG).read_text()))


def load_network(model_dir: Path) -> tuple[TwoHeadClassifier, ModelMeta, str]:
    """Verify and load a model folder into an fp32 network on the CPU, in eval mode."""
    version = verify_artifact(model_dir)
    meta = load_meta(model_dir)
    network = TwoHeadClassifier(BertConfig(**meta.bert), len(meta.topics), len(meta.sentiments))
    state = load_file(str(model_dir / WEIGHTS))
    network.load_state_dict({k: v.float() for k, v in state.items()})
    network.eval()
    return network, meta, version
