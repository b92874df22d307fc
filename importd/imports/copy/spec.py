"""What a load is given and what it gives back: the target table, the dialect and limits, a
rejected row. Plain data, so the job side builds them and the COPY engine needs nothing else."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from importd.imports.copy.scan import NL, Encoding, line_break

#: The table column of a field the job ignores (its ``columns`` option maps it to null): the
#: field is read and dropped (see :func:`importd.imports.targets.map_header`).
IGNORED = ""

#: A rejected row: (line number, column or None, value or None, reason).
Reject = tuple[int, str | None, str | None, str]


@dataclass(frozen=True)
class LoadOptions:
    delimiter: str
    encoding: Encoding
    batch_bytes: int = 8 * 1024 * 1024
    max_line_bytes: int = 4 * 1024 * 1024
    max_field_bytes: int = 1024 * 1024
    on_conflict: str = "error"  # error | skip | update
    conflict_key: tuple[str, ...] = ()
    eol: bytes = NL  # the file's line end (LF, CRLF or CR), decided at its header

    @property
    def brk(self) -> bytes:
        """The byte that ends a record (CR in a bare-CR file, else LF)."""
        return line_break(self.eol)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    not_null: bool
    has_default: bool
    generated: bool

    @property
    def required(self) -> bool:
        """A NOT NULL column the file must supply (no default, not identity or generated)."""
        return self.not_null and not self.has_default and not self.generated


@dataclass(frozen=True)
class Target:
    schema: str
    table: str
    columns: dict[str, Column]  # in table order

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"

    def ident(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.table))
