"""A worker extension that SIGKILLs its child at start-up, before it reports consuming
(issue 12 item 9: a child killed by a signal at start must not respawn every tick)."""

from __future__ import annotations

import os
import signal
from typing import Any


def attach(consumer: Any, connection: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)
