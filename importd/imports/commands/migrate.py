"""``importd migrate``: apply importd's SQL migrations (safe twice, safe from two hosts)."""

from __future__ import annotations

import argparse
import sys

import psycopg

from importd.config import Settings
from importd.imports import store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the applied versions as JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        applied = store.migrate(settings)
    except psycopg.Error as exc:
        print(f"importd migrate: {exc}", file=sys.stderr)
        return 1
    if args.json:
        import json

        print(json.dumps({"applied": applied}))
    elif applied:
        for version in applied:
            print(f"applied migration {version:03d}")
    else:
        print("database schema up to date")
    return 0
