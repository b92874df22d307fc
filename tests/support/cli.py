"""Run ``python -m importd <command>`` as a real subprocess against the test's services."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from importd.config import Settings
from tests.support.infra import ROOT, env_for

#: Task modules a worker in the operations tests loads.
OPS_TASK_MODULES = "tests.support.tasks,tests.support.ops_tasks"


def run_cli(settings: Settings, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "importd", *args], env=env_for(settings, **env), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def popen_cli(settings: Settings, *args: str, **env: str) -> subprocess.Popen[Any]:
    return subprocess.Popen([sys.executable, "-m", "importd", *args], env=env_for(settings, **env), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
