import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from config.settings import Settings, env_name, reference_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_the_configuration_reference_is_the_generated_one() -> None:
    reference = (ROOT / "docs/configuration.md").read_text()
    block = re.search(r"<!-- config:start -->\n(.*?)<!-- config:end -->", reference, re.S)
    assert block is not None
    assert block.group(1) == reference_markdown(), "run `finsentry config` and paste it into docs/configuration.md"


def test_every_variable_the_readme_names_is_a_setting() -> None:
    names = set(re.findall(r"\b(?:FINSENTRY_[A-Z0-9_]+|DATABASE_URL|KAFKA_BOOTSTRAP_SERVERS)\b",
                           (ROOT / "README.md").read_text()))
    known = {env_name(n) for n in Settings.model_fields}
    assert names and names <= known, sorted(names - known)


def test_every_setting_is_documented() -> None:
    assert all(field.description for field in Settings.model_fields.values())


def test_usual_names_and_prefix_are_read_and_settings_are_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:hunter2@db/x")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092")
    monkeypatch.setenv("FINSENTRY_SPIKE_OVERRIDES", '{"topic:Macro": {"threshold": 9}}')
    settings = Settings()
    assert settings.kafka_bootstrap_servers == "k1:9092"
    assert settings.spike_overrides == {"topic:Macro": {"threshold": 9.0}}
    assert "hunter2" not in repr(settings)
    with pytest.raises(ValidationError):
        settings.micro_batch_size = 1  # type: ignore[misc]
