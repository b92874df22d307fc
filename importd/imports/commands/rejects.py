"""``importd errors ID``: the job's rejected rows as CSV on stdout (first 1,000 stored)."""

from __future__ import annotations

import argparse
import csv
import sys

import psycopg

from importd.config import Settings
from importd.imports import store

#: Columns of the report.
HEADER = ("line_number", "column", "value", "reason")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", metavar="ID", help="job id")


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        with store.connect(settings) as conn:
            if store.get_job(conn, args.job_id) is None:
                print(f"importd errors: no job {args.job_id}", file=sys.stderr)
                return 1
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(HEADER)
            for row in store.iter_rejected_rows(conn, args.job_id):
                writer.writerow(row)
    except psycopg.Error as exc:
        print(f"importd errors: {exc}", file=sys.stderr)
        return 1
    return 0
