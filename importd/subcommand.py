"""What a subcommand is: the one shape every ``importd`` command has, shared by all layers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NamedTuple

from importd.config import Settings

#: Exit codes.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 78

Command = Callable[[argparse.Namespace, Settings], int]


class Subcommand(NamedTuple):
    """One command living in the module that owns its job (``"module:ATTR"`` in the CLI's table)."""

    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Command
