"""deploy/: the systemd units verify, and the env example and RabbitMQ config say what they must."""

from __future__ import annotations

import configparser
import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from importd.config import PREFIX, Settings
from importd.worker import tasks

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = ("importd-worker.service", "importd-api.service")


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found:
        return found
    out = subprocess.run([str(ROOT / "scripts/ensure-systemd-analyze.sh")], capture_output=True, text=True)
    found = shutil.which("systemd-analyze")
    if not found:
        pytest.skip(f"systemd-analyze not installed and could not be installed: {out.stderr.strip()}"
                    " (make test runs scripts/ensure-systemd-analyze.sh first; in CI a skip fails the run)")
    return found


def _unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / name)
    return parser


def test_systemd_analyze_verify_accepts_both_units(tmp_path: Path):
    analyze = _systemd_analyze()
    # verify insists that ExecStart's binary exists: point it at a stand-in, change nothing else.
    stand_in = tmp_path / "importd-bin"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    copies = []
    for name in UNITS:
        text = (DEPLOY / name).read_text()
        text, n = re.subn(r"^ExecStart=/opt/importd/venv/bin/\S+", f"ExecStart={stand_in}", text, flags=re.M)
        assert n == 1, name
        (tmp_path / name).write_text(text)
        copies.append(str(tmp_path / name))
    out = subprocess.run([analyze, "verify", *copies], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and not out.stderr.strip() and not out.stdout.strip(), out.stderr + out.stdout


def test_worker_unit_fits_the_prefork_model_and_the_time_limits():
    service = _unit("importd-worker.service")["Service"]
    assert service["Type"] == "notify" and int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure"
    assert service["KillMode"] == "mixed"  # SIGTERM to the supervisor only, SIGKILL to all at the end
    soft = max(spec.soft_time_limit_s for spec in tasks.all_tasks())
    assert int(service["TimeoutStopSec"]) > soft
    assert int(service["TimeoutStopSec"]) > Settings().shutdown_grace_s  # the supervisor gives up first
    assert "78" in service["RestartPreventExitStatus"]


@pytest.mark.parametrize("name", UNITS)
def test_units_run_as_a_dedicated_user_with_hardening_and_a_writable_upload_dir(name: str):
    service = _unit(name)["Service"]
    assert service["User"] == "importd"
    assert service["NoNewPrivileges"] == "yes" and service["PrivateTmp"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert str(Settings().upload_dir) in service["ReadWritePaths"].split()
    assert service["EnvironmentFile"] == "/etc/importd/importd.env"


def test_env_example_lists_every_setting():
    text = (DEPLOY / "importd.env.example").read_text()
    listed = set(re.findall(rf"^#?({PREFIX}[A-Z0-9_]+)=", text, flags=re.M))
    expected = {PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    assert listed == expected


def test_rabbitmq_conf_raises_consumer_timeout_above_the_hard_time_limit():
    text = (DEPLOY / "rabbitmq/rabbitmq.conf").read_text()
    (value,) = re.findall(r"^consumer_timeout\s*=\s*(\d+)\s*$", text, flags=re.M)
    hard = max(spec.hard_time_limit_s for spec in tasks.BUILTIN)
    assert int(value) > hard * 1000


def test_compose_dev_stack_has_the_three_services_and_mounts_the_rabbitmq_conf():
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    assert services["rabbitmq"]["image"] == "rabbitmq:3-management"
    assert any(v.startswith("./rabbitmq/rabbitmq.conf:/etc/rabbitmq/") for v in services["rabbitmq"]["volumes"])
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    ports = {p for svc in services.values() for p in svc.get("ports", [])}
    assert {"127.0.0.1:5432:5432", "127.0.0.1:6379:6379", "127.0.0.1:5672:5672"} <= ports


COMPOSE = DEPLOY / "compose.yaml"
#: Services that run once and exit (no healthcheck: the others wait for their completion).
ONE_SHOTS = {"minio-bucket", "init"}
#: The whole system of deploy/compose.yaml.
SYSTEM = {"postgres", "redis", "rabbitmq", "rabbitmq2", "rabbitmq3", "minio", "api", "worker"} | ONE_SHOTS


def compose_services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def docker_compose_config() -> subprocess.CompletedProcess[str] | None:
    """``docker compose config -q`` where Docker Compose exists, else None."""
    if not shutil.which("docker"):
        return None
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        return None
    return subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True)


def test_compose_file_is_valid_for_docker_compose_where_it_exists_and_by_its_schema_everywhere():
    checked = docker_compose_config()
    if checked is not None:
        assert checked.returncode == 0, checked.stderr
    services = compose_services()
    assert set(services) == SYSTEM
    for name, svc in services.items():
        assert ("image" in svc) or ("build" in svc), name
        for dep, cond in svc.get("depends_on", {}).items():
            assert dep in services, (name, dep)
            expected = "service_completed_successfully" if dep in ONE_SHOTS else "service_healthy"
            assert cond == {"condition": expected}, (name, dep, cond)
        if name not in ONE_SHOTS:
            test = svc["healthcheck"]["test"]
            assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name


def test_compose_worker_scales_and_api_and_worker_start_after_every_service_is_ready():
    services = compose_services()
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=3 needs both absent
    assert worker["command"] == ["worker"]
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert {"init", "minio-bucket", "redis"} <= set(deps), name
    init_deps = set(services["init"]["depends_on"])
    assert {"postgres", "rabbitmq", "rabbitmq2", "rabbitmq3"} <= init_deps
    assert "importd migrate" in " ".join(services["init"]["entrypoint"])


def test_compose_importd_settings_are_known_and_name_the_cluster_quorum_queues_and_minio():
    services = compose_services()
    fields = {PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    for name in ("init", "api", "worker"):
        env = services[name]["environment"]
        unknown = {k for k in env if k.startswith(PREFIX)} - fields
        assert not unknown, (name, unknown)
        assert env["IMPORTD_QUEUE_TYPE"] == "quorum"
        hosts = re.findall(r"@([a-z0-9]+):5672/", env["IMPORTD_BROKER_URL"])
        assert hosts == ["rabbitmq", "rabbitmq2", "rabbitmq3"], env["IMPORTD_BROKER_URL"]
        bucket = re.match(r"s3://([^/]+)", env["IMPORTD_STORAGE_URL"])
        assert bucket and f"local/{bucket.group(1)}" in " ".join(services["minio-bucket"]["command"])
        assert env["IMPORTD_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert services["api"]["environment"]["IMPORTD_API_TOKENS"]  # `importd api` refuses 0.0.0.0 without


def test_compose_rabbitmq_nodes_share_a_cookie_and_two_join_the_first_by_classic_config():
    services = compose_services()
    cookies = {services[n]["environment"]["RABBITMQ_ERLANG_COOKIE"] for n in ("rabbitmq", "rabbitmq2", "rabbitmq3")}
    assert len(cookies) == 1
    conf = (DEPLOY / "rabbitmq/cluster.conf").read_text()
    assert re.search(r"^cluster_formation\.peer_discovery_backend\s*=\s*classic_config\s*$", conf, flags=re.M)
    peers = re.findall(r"^cluster_formation\.classic_config\.nodes\.\d+\s*=\s*rabbit@(\S+)\s*$", conf, flags=re.M)
    assert peers == [services[n]["hostname"] for n in ("rabbitmq", "rabbitmq2", "rabbitmq3")]
    for name in ("rabbitmq2", "rabbitmq3"):
        assert any(v.startswith("./rabbitmq/cluster.conf:/etc/rabbitmq/conf.d/") for v in services[name]["volumes"])
        assert services[name]["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}}
