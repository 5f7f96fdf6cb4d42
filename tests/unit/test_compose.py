"""docker-compose.yml cannot be run here (no Docker engine); it and its configuration files are checked."""

import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_services_and_versions_are_pinned() -> None:
    assert set(SERVICES) >= {"kafka", "kafka-init", "postgres", "migrate", "worker-gpu", "worker-cpu", "detector",
                             "scheduler", "prometheus", "grafana"}
    for name, service in SERVICES.items():
        image = service.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name} image must be pinned: {image!r}"


def test_kafka_runs_kraft_and_topics_are_created_at_start() -> None:
    env = SERVICES["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "zookeeper" not in str(COMPOSE).lower()
    script = SERVICES["kafka-init"]["command"][0]
    for topic in ("finsentry.news", "finsentry.social", "finsentry.dead-letter", "finsentry.windows",
                  "finsentry.alerts"):
        assert topic in script
    assert "--if-not-exists" in script


def test_gpu_and_cpu_workers_are_profiles_and_wait_for_migration() -> None:
    gpu, cpu = SERVICES["worker-gpu"], SERVICES["worker-cpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "deploy" not in cpu
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    for worker in (gpu, cpu):
        assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert "9108/healthz" in " ".join(worker["healthcheck"]["test"])
    assert SERVICES["migrate"]["command"] == ["migrate"]
    assert SERVICES["postgres"]["healthcheck"]["test"]


def test_the_detector_is_its_own_service_and_the_workers_do_not_start_one() -> None:
    assert SERVICES["detector"]["command"] == ["detector"]
    assert SERVICES["detector"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name in ("worker-gpu", "worker-cpu"):
        assert SERVICES[name]["command"] == ["worker", "--no-detector"]


def test_services_get_connection_settings() -> None:
    for name in ("migrate", "worker-gpu", "worker-cpu", "detector", "scheduler"):
        env = SERVICES[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://") and env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_mounted_configuration_files_exist() -> None:
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source


def test_prometheus_scrapes_the_workers_and_the_detectors_and_loads_the_alert_rules() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job["dns_sd_configs"][0] for job in config["scrape_configs"]}
    assert set(jobs["finsentry-worker"]["names"]) == {"worker-gpu", "worker-cpu"}
    assert jobs["finsentry-worker"]["port"] == 9108
    assert jobs["finsentry-detector"]["names"] == ["detector"] and jobs["finsentry-detector"]["port"] == 9107
    assert config["rule_files"] == ["alerts.yml"]
    mounts = SERVICES["prometheus"]["volumes"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts
    assert "9107/healthz" in " ".join(SERVICES["detector"]["healthcheck"]["test"])


def test_grafana_reads_postgres_as_the_analyst_role_and_loads_the_dashboard() -> None:
    sources = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/postgres.yml").read_text())
    pg = next(s for s in sources["datasources"] if s["type"] == "grafana-postgresql-datasource")
    assert pg["user"] == "grafana" and pg["jsonData"]["database"] == "finsentry"
    assert "IN ROLE finsentry_analyst" in (ROOT / "deploy/postgres/init.sql").read_text()
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/finsentry.json").read_text())
    assert dashboard["uid"] == "finsentry-trends" and len(dashboard["panels"]) >= 4
    assert all(p["datasource"]["uid"] == pg["uid"] for p in dashboard["panels"])


def test_the_image_copies_every_package_the_project_installs() -> None:
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    copied = {line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")}
    assert {p.split(".")[0] for p in packages} <= copied
