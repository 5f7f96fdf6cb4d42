"""docker-compose.yml cannot be run here (no Docker engine); its structure is checked instead."""

from pathlib import Path

import yaml

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text())


def test_services_and_versions_are_pinned() -> None:
    services = COMPOSE["services"]
    assert set(services) >= {"kafka", "postgres", "migrate", "worker", "scheduler"}
    for name, service in services.items():
        image = service.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name} image must be pinned: {image!r}"


def test_kafka_runs_kraft_without_zookeeper() -> None:
    env = COMPOSE["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "zookeeper" not in str(COMPOSE).lower()


def test_worker_reserves_a_gpu_and_waits_for_migration() -> None:
    worker = COMPOSE["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert COMPOSE["services"]["migrate"]["command"] == ["migrate"]
    assert COMPOSE["services"]["postgres"]["healthcheck"]["test"]


def test_services_get_connection_settings() -> None:
    for name in ("migrate", "worker", "scheduler"):
        env = COMPOSE["services"][name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://") and env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
