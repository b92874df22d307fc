"""Splitting a suspect record into its raw CSV fields the way PostgreSQL reads them, or
declining (importd.imports.copy.triage.split)."""

from __future__ import annotations

import pytest

from importd.imports.copy.triage import split


@pytest.mark.parametrize(("body", "fields"), [
    (b"1,abc,2.5", [b"1", b"abc", b"2.5"]),
    (b'1,"a, b",""', [b"1", b'"a, b"', b'""']),
    (b'"say ""hi""",x', [b'"say ""hi"""', b"x"]),
    (b'1,"two\nlines",', [b"1", b'"two\nlines"', b""]),
    (b"", [b""]),
    (b",", [b"", b""]),
])
def test_split_keeps_quotes_and_finds_every_field(body, fields):
    assert split(body, b",") == fields


@pytest.mark.parametrize("body", [b'1,ab"c,2', b'1,"ab"c,2', b'1,"unclosed'])
def test_split_declines_what_postgresql_reads_its_own_way(body):
    assert split(body, b",") is None


def test_split_uses_the_given_delimiter():
    assert split(b'1;"a;b";c,d', b";") == [b"1", b'"a;b"', b"c,d"]
