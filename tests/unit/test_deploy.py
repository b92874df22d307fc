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
    ports = {p for svc in services.values() for p in svc["ports"]}
    assert {"127.0.0.1:5432:5432", "127.0.0.1:6379:6379", "127.0.0.1:5672:5672"} <= ports
