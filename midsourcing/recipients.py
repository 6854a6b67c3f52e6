"""Recipients from a CSV file, and message texts rendered for each of them.

Contract:
- The file is UTF-8 (a BOM is allowed) with a header line; the delimiter (comma,
  semicolon or tab) is detected. One column holds the mobile number: `mobile` (or
  `phone`, `msisdn`, `number`, `mobile_number`; any case). Every column is a field the
  text can use as `{column}`; `first_name` and `last_name` are also kept on the
  recipient. `{{` and `}}` are literal braces.
- A number is put in the canonical form of smsmta.numbers (`+<E.164 digits>`: spaces,
  dots, dashes, slashes and parentheses dropped, `00` read as `+`, a national number read
  with the marketing account's `default_country`, refused without one), so that two
  writings of one handset are one recipient and the mid server's blacklists match.
- A row is rejected, with its line number in the file and the reason, when its number
  cannot be canonicalised, when its number repeats an earlier row's (compared in the
  canonical form), when it has more fields than the
  header, or when its rendered text is empty or too long; the other rows are kept.
- A text naming a column the file does not have is refused as a whole (nothing could be
  rendered), as is a placeholder with an attribute, index or conversion (`{a.b}`, `{a!r}`).

Pure functions: the only thing touched is the CSV file read by `read_csv`.
"""

from __future__ import annotations

import csv
import io
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from midsourcing.schemas import MAX_TEXT
from smsmta.numbers import NumberError, canonical

MOBILE_COLUMNS = ("mobile", "phone", "msisdn", "number", "mobile_number")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class CsvError(ValueError):
    """The file or the text cannot be used at all (no header, no mobile column, ...)."""


@dataclass(frozen=True)
class Row:
    line: int
    mobile: str
    fields: dict[str, str]
    text: str

    @property
    def first_name(self) -> str:
        return self.fields.get("first_name", "")

    @property
    def last_name(self) -> str:
        return self.fields.get("last_name", "")


@dataclass(frozen=True)
class Rejection:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"row {self.line}: {self.reason}"


@dataclass
class Recipients:
    columns: list[str]
    mobile_column: str
    rows: list[Row] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def normalize_number(raw: str, default_country: str = "") -> str | None:
    """The number in the canonical form (E.164), None when it cannot be."""
    try:
        return canonical(raw, default_country=default_country)
    except NumberError:
        return None


def text_fields(text: str) -> list[str]:
    """The `{field}` names of a text; CsvError for a placeholder that is not a plain name."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise CsvError(
            f"the text is not a valid template: {exc} (write {{{{ for a brace)"
        ) from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not _FIELD.match(name) or spec or conversion:
            shown = (
                "{"
                + name
                + (f"!{conversion}" if conversion else "")
                + (f":{spec}" if spec else "")
                + "}"
            )
            raise CsvError(
                f"placeholder {shown} of the text: use {{column}} with a CSV column name"
            )
        if name not in names:
            names.append(name)
    return names


def render(text: str, fields: dict[str, str]) -> str:
    """The text with each `{field}` replaced by its value (text_fields() checked it)."""
    out: list[str] = []
    for literal, name, _spec, _conversion in string.Formatter().parse(text):
        out.append(literal)
        if name is not None:
            out.append(fields.get(name, ""))
    return "".join(out)


def parse_csv(
    content: str, text: str, *, source: str = "the file", default_country: str = ""
) -> Recipients:
    """Read recipients from CSV text and render `text` for each; see the module contract."""
    wanted = text_fields(text)
    sample = content[:8192]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(content), dialect)
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise CsvError(f"{source} is empty: it needs a header line and rows") from None
    lowered = [name.lower() for name in header]
    mobile_index = next((lowered.index(name) for name in MOBILE_COLUMNS if name in lowered), None)
    if mobile_index is None:
        raise CsvError(
            f"{source} has no mobile number column: name one of "
            f"{', '.join(MOBILE_COLUMNS)} (columns found: {', '.join(header) or 'none'})"
        )
    if len(set(lowered)) != len(lowered):
        raise CsvError(f"{source}: a column name appears twice in the header")
    missing = [name for name in wanted if name not in header]
    if missing:
        raise CsvError(
            f"the text uses {', '.join('{' + m + '}' for m in missing)} but {source} has no "
            f"such column (columns: {', '.join(header)})"
        )
    result = Recipients(columns=header, mobile_column=header[mobile_index])
    seen: dict[str, int] = {}
    for values in reader:
        line = reader.line_num
        if not values or all(not value.strip() for value in values):
            continue
        if len(values) > len(header):
            result.rejected.append(
                Rejection(line, f"{len(values)} fields, the header has {len(header)}")
            )
            continue
        fields = {name: value.strip() for name, value in zip(header, values, strict=False)}
        for name in header[len(values) :]:
            fields[name] = ""
        raw = fields[header[mobile_index]]
        if not raw:
            result.rejected.append(Rejection(line, "no mobile number"))
            continue
        try:
            mobile = canonical(raw, default_country=default_country)
        except NumberError as error:
            result.rejected.append(Rejection(line, f"invalid mobile number {raw!r}: {error}"))
            continue
        if mobile in seen:
            result.rejected.append(
                Rejection(line, f"mobile number {mobile} repeats row {seen[mobile]}")
            )
            continue
        rendered = render(text, fields)
        if not rendered.strip():
            result.rejected.append(Rejection(line, "the text rendered for this row is empty"))
            continue
        if len(rendered) > MAX_TEXT:
            result.rejected.append(
                Rejection(
                    line, f"the rendered text has {len(rendered)} characters (max {MAX_TEXT})"
                )
            )
            continue
        seen[mobile] = line
        result.rows.append(Row(line, mobile, fields, rendered))
    return result


def read_csv(path: str | Path, text: str, default_country: str = "") -> Recipients:
    file = Path(path)
    try:
        content = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CsvError(f"{file} is not UTF-8 (byte {exc.start}): save it as UTF-8") from None
    except OSError as exc:
        raise CsvError(f"cannot read {file}: {exc.strerror}") from None
    return parse_csv(content, text, source=str(file), default_country=default_country)
