"""Delivery receipts (SR/DLR): Annex B parsing, id extraction, id formats, stat classification.

What it does
    Turns the short_message and TLVs of a receipt deliver_sm into a `Receipt`: the provider's
    message id in canonical form (to match `provider_msg_id`), where that id came from, the
    stat and err, the outcome (DELIVERED / FAILED / INTERMEDIATE), and the message-log text
    and key of SPEC section 7. It also turns an MT-ack id (submit_sm_resp message_id) into the
    same canonical form (`format_id`) and names synchronous errors (`submit_error_log`).

Contract
    - `ReceiptRules` is built once per account (`ReceiptRules.build`); it holds the compiled
      regexes. `interpret` does one decode, one Annex B scan, one id-regex search and two
      stat-regex searches per receipt.
    - `interpret` never raises on provider input (any bytes, any TLVs): an id that cannot be
      extracted or converted gives `provider_id=None` and a reason in `id_error`.
    - `format_id` raises ValueError naming the id and the format; the caller decides.
    - Classification is decided here and only here (`ReceiptRules.classify`): the success
      regex on stat gives DELIVERED, else the error regex gives FAILED, else INTERMEDIATE.
    - Regexes are Python `re` (close to PCRE for what SR regexes use), searched, not
      anchored: the default success/error regexes anchor themselves with `^`.

Processed text (what the id regex sees)
    The decoded short_message, with the `Text:` sub-field cut (unless `id_in_text_field`),
    then ` 0xTAG:VALUE` appended for every text TLV (if `id_in_optional_fields`). The stat and
    err come from the Annex B fields of the text before `Text:`; then, with
    `id_in_text_field`, from Annex B fields inside the `Text:` sub-field, and with
    `id_in_optional_fields`, from Annex B fields inside a text TLV (`stat:REJECTD err:012`);
    last from the message_state (0x0427) and network_error_code (0x0423) TLVs.

Text id and receipted_message_id (0x001E)
    The TLV carries the submit_sm_resp message_id, so it is read with the MT-ack id format.
    Without a text id the TLV is the id. With both, when they disagree once formatted (or the
    text id cannot be read in the SR id format), the TLV decides: the text id could name
    another message (a decimal "1234" beside hex MT-ack ids), the TLV cannot. The receipt
    then says so in `overruled_text_id`; `id_disagreement_fix` names the setting that would
    make the two agree. The caller counts and logs it (this module does no I/O).

What it touches
    Nothing: no I/O, clocks, logging or globals beyond the compiled module-level regexes.
    Written by hand because no library parses Annex B receipts with these account options.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from smsmta.smpp import constants


class IdFormat(StrEnum):
    """How a provider writes a message id (MT-ack id format, SR id format)."""

    AS_IS = "as_is"
    DECIMAL = "decimal"
    HEX_NUMBER = "hex_number"
    HEX_STRING = "hex_string"


# Up to 10 alphanumerics after `id:` (spaces after the colon allowed), ending at a space, at
# punctuation or at the end (SPEC section 4). The lookahead refuses a longer alphanumeric run
# instead of silently keeping its first 10 characters (a truncated id would never match its
# MT); such a receipt then falls back to receipted_message_id, or needs a custom regex. An id
# with punctuation inside (a UUID) is cut at it: receipted_message_id, when present, decides.
DEFAULT_ID_REGEX = r"(?i)\bid:\s*([0-9a-z]{1,10})(?![0-9a-z])"
DEFAULT_SUCCESS_REGEX = r"(?i)^DELIV"  # applied to the stat value
DEFAULT_ERROR_REGEX = r"(?i)^(?:UNDELIV|REJECTD|REJECTED|FAILED|EXPIRED|DELETED|UNKNOWN)"

TAG_RECEIPTED_MESSAGE_ID = 0x001E
TAG_NETWORK_ERROR_CODE = 0x0423
TAG_MESSAGE_PAYLOAD = 0x0424
TAG_MESSAGE_STATE = 0x0427

# Annex B stat words and the message_state they stand for (SMPP 3.4 section 5.2.28): the one
# table (the SMSC simulator writes receipts from it too).
STAT_STATES: Mapping[str, constants.MessageState] = {
    "ENROUTE": constants.MessageState.ENROUTE,
    "DELIVRD": constants.MessageState.DELIVERED,
    "EXPIRED": constants.MessageState.EXPIRED,
    "DELETED": constants.MessageState.DELETED,
    "UNDELIV": constants.MessageState.UNDELIVERABLE,
    "ACCEPTD": constants.MessageState.ACCEPTED,
    "UNKNOWN": constants.MessageState.UNKNOWN,
    "REJECTD": constants.MessageState.REJECTED,
}
# message_state TLV values as Annex B stat words.
MESSAGE_STATE_STAT: Mapping[int, str] = {int(state): stat for stat, state in STAT_STATES.items()}

# Stat and err are single Annex B words (7 and 3 characters); longer values are cut so a
# broken provider cannot flood the message log with huge distinct keys.
MAX_STAT_ERR_LEN = 64
# Longest id `format_id` converts; SMPP message_id is at most 65 octets.
MAX_ID_LEN = 256
MISSING = "-"  # how an absent stat or err is written in the message log


def check_id_regex(pattern: str) -> re.Pattern[str]:
    """Compile an SR id-extraction regex; ValueError unless it has exactly one capture group."""
    compiled = _compile(pattern, "SR id regex")
    if compiled.groups != 1:
        raise ValueError(
            f"SR id regex {pattern!r} must have exactly one capture group, it has {compiled.groups}"
        )
    return compiled


def check_stat_regex(pattern: str, what: str = "SR stat regex") -> re.Pattern[str]:
    """Compile an SR success or error regex; ValueError with a clear message if invalid."""
    return _compile(pattern, what)


def _compile(pattern: str, what: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{what} {pattern!r} is not a valid regular expression: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Id formats
# ---------------------------------------------------------------------------------------------

_DIGITS = re.compile(r"[0-9]+")
_HEX_NUMBER = re.compile(r"(?:0[xX])?([0-9A-Fa-f]+)[hH]?")
_HEX_STRING = re.compile(r"(?:[0-9A-Fa-f]{2})+")


def format_id(raw: str, fmt: IdFormat) -> str:
    """Return the canonical text of a provider id written in `fmt`.

    as_is: unchanged. decimal: surrounding spaces and leading zeros removed ("0" stays "0").
    hex_number: ASCII hex (a stray `0x` prefix or `h` suffix is tolerated) as decimal text.
    hex_string: hex-written bytes decoded as printable ASCII ("414243" -> "ABC"; one trailing
    NUL byte, a C-string terminator, is dropped). Raises ValueError naming the id and format.
    """
    if fmt is IdFormat.AS_IS:
        return raw
    value = raw.strip()
    if len(value) > MAX_ID_LEN:
        raise ValueError(f"id {_short(raw)} is too long for id format {fmt.value}")
    if fmt is IdFormat.DECIMAL:
        if not _DIGITS.fullmatch(value):
            raise ValueError(f"id {_short(raw)} is not a decimal number (id format decimal)")
        return value.lstrip("0") or "0"
    if fmt is IdFormat.HEX_NUMBER:
        match = _HEX_NUMBER.fullmatch(value)
        if match is None:
            raise ValueError(f"id {_short(raw)} is not a hexadecimal number (id format hex_number)")
        return str(int(match.group(1), 16))
    if fmt is IdFormat.HEX_STRING:
        if not _HEX_STRING.fullmatch(value):
            raise ValueError(
                f"id {_short(raw)} is not an even-length hexadecimal string (id format hex_string)"
            )
        data = bytes.fromhex(value)
        if data.endswith(b"\0"):
            data = data[:-1]
        text = data.decode("latin-1")
        if not text or not (text.isascii() and text.isprintable()):
            raise ValueError(
                f"id {_short(raw)} does not decode to printable ASCII text (id format hex_string)"
            )
        return text
    raise ValueError(f"unknown id format {fmt!r}")  # pragma: no cover - IdFormat is closed


def _short(raw: str) -> str:
    return repr(raw if len(raw) <= 80 else raw[:80] + "...")


# ---------------------------------------------------------------------------------------------
# Annex B
# ---------------------------------------------------------------------------------------------

# Annex B is scanned with str methods, not one regex over the text: a regex scan of a typical
# receipt costs about 3x more, and this runs per receipt. A field name starts the text or
# follows whitespace, is a letter then letters, digits, `_` or `-`, and is directly followed
# by `:`; `submit date` and `done date` are the two names with a space. Anything else before
# a colon (`14:15`, `http://`) belongs to the value.
_NAME = re.compile(r"[^\W\d_][\w-]*")
_TEXT_NAME = re.compile(r"(?<!\S)text:", re.IGNORECASE)
_OTHER_SPACE = re.compile(r"[^\S ]")  # whitespace other than " "


def _text_name_at(text: str) -> int:
    """Index of the `Text:` field name (case-insensitive, at start or after whitespace), or -1."""
    if not text.isascii():  # str.lower() may change lengths outside ASCII
        match = _TEXT_NAME.search(text)
        return -1 if match is None else match.start()
    lower = text.lower()
    at = lower.find("text:")
    while at > 0 and not lower[at - 1].isspace():
        at = lower.find("text:", at + 1)
    return at


def _scan_annex_b(text: str) -> tuple[dict[str, str], int]:
    """Fields of an Annex B text and the index where its `Text:` name starts (-1 if none)."""
    text_at = _text_name_at(text)
    head = text if text_at < 0 else text[:text_at]
    fields: dict[str, str] = {}
    if ":" in head:
        if not (head.isascii() and head.isprintable()):  # tabs, newlines, other spaces
            head = _OTHER_SPACE.sub(" ", head)
        parts = head.split(":")
        name: str | None = None
        value = ""  # the current field's value so far, when it contains colons
        first = True
        for part in parts[:-1]:  # every part but the last is followed by a colon
            before, space, word = part.rpartition(" ")
            if (space or first) and (word.isalpha() or _NAME.fullmatch(word)):
                key = word.lower()
                if key == "date":
                    before2, _, word2 = before.rstrip().rpartition(" ")
                    key2 = word2.lower()
                    if key2 == "submit" or key2 == "done":
                        key = key2 + " date"
                        before = before2
                if name is not None and name not in fields:
                    fields[name] = (value + before).strip()
                name = key
                value = ""
            else:
                value += part + ":"
            first = False
        if name is not None and name not in fields:
            fields[name] = (value + parts[-1]).strip()
    if text_at >= 0 and "text" not in fields:
        fields["text"] = text[text_at + 5 :].strip()
    return fields, text_at


def parse_annex_b(text: str) -> dict[str, str]:
    """Parse `id:… sub:… dlvrd:… submit date:… done date:… stat:… err:… Text:…`.

    Keys are lower-case (`submit date` and `done date` with one space); values are stripped.
    Field names are case-insensitive; missing fields are absent; unknown fields are kept;
    the first occurrence of a name wins; `Text:` runs to the end, colons and all.
    """
    return _scan_annex_b(text)[0]


# ---------------------------------------------------------------------------------------------
# Receipts
# ---------------------------------------------------------------------------------------------


class Outcome(StrEnum):
    """What a receipt means for its MT; decided only by `ReceiptRules.classify`."""

    DELIVERED = "delivered"
    FAILED = "failed"
    INTERMEDIATE = "intermediate"  # ignored by reconciliation, kept in history


class IdSource(StrEnum):
    """Where a receipt's provider id came from."""

    REGEX = "regex"  # the SR id regex on the processed text (short_message, maybe TLVs)
    # the 0x001E TLV: when the regex found no readable id, or one that disagrees with it
    RECEIPTED_MESSAGE_ID = "receipted_message_id"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class ReceiptRules:
    """An account's receipt settings, compiled once. Build with `ReceiptRules.build`."""

    smsc_name: str
    id_regex: re.Pattern[str]
    success_regex: re.Pattern[str]
    error_regex: re.Pattern[str]
    sr_id_format: IdFormat = IdFormat.AS_IS
    # Format of receipted_message_id, which carries the submit_sm_resp message_id.
    mt_ack_id_format: IdFormat = IdFormat.AS_IS
    id_in_optional_fields: bool = False
    id_in_text_field: bool = False

    @classmethod
    def build(
        cls,
        smsc_name: str,
        *,
        id_regex: str = DEFAULT_ID_REGEX,
        success_regex: str = DEFAULT_SUCCESS_REGEX,
        error_regex: str = DEFAULT_ERROR_REGEX,
        sr_id_format: IdFormat = IdFormat.AS_IS,
        mt_ack_id_format: IdFormat = IdFormat.AS_IS,
        id_in_optional_fields: bool = False,
        id_in_text_field: bool = False,
    ) -> ReceiptRules:
        """Compile the regexes (ValueError naming the bad one) and return the rules."""
        return cls(
            smsc_name=smsc_name,
            id_regex=check_id_regex(id_regex),
            success_regex=check_stat_regex(success_regex, "SR success regex"),
            error_regex=check_stat_regex(error_regex, "SR error regex"),
            sr_id_format=IdFormat(sr_id_format),
            mt_ack_id_format=IdFormat(mt_ack_id_format),
            id_in_optional_fields=id_in_optional_fields,
            id_in_text_field=id_in_text_field,
        )

    def classify(self, stat: str | None) -> Outcome:
        """The one place a stat gets its meaning (an absent stat is searched as "")."""
        value = stat or ""
        if self.success_regex.search(value):
            return Outcome.DELIVERED
        if self.error_regex.search(value):
            return Outcome.FAILED
        return Outcome.INTERMEDIATE


@dataclass(frozen=True, slots=True)
class Receipt:
    """What one receipt says. `provider_id` is canonical, ready to match provider_msg_id."""

    provider_id: str | None
    id_source: IdSource
    id_error: str | None  # why provider_id is None; None when it is set
    raw_id: str | None  # the id as found, before the id format
    stat: str | None
    err: str | None
    outcome: Outcome
    text: str  # the decoded short_message, unmodified except NULs (PostgreSQL text has none)
    log_text: str  # SR <smsc name> <stat> <err>|MESSAGE=<text>
    log_key: str  # SR <smsc name> <stat> <err>|#MESSAGE#
    fields: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    # The id the regex found in the text (as captured) when receipted_message_id overruled
    # it: the two disagree once formatted. None when they agree or either is absent.
    overruled_text_id: str | None = None


def decode_text(data: bytes | bytearray | memoryview | str) -> str:
    """Decode a receipt text leniently: UTF-8 (hence ASCII) if valid, else Latin-1.

    Never raises. Trailing NULs are dropped and inner NULs become U+FFFD. Callers that know
    the data_coding and decoded the text themselves may pass a str.
    """
    if isinstance(data, str):
        text = data
    else:
        raw = bytes(data)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
    if "\0" in text:
        text = text.rstrip("\0").replace("\0", "\ufffd")
    return text


def _tlv_text(value: bytes) -> str | None:
    """A TLV value as text if it is printable UTF-8 after one trailing NUL, else None."""
    if value.endswith(b"\0"):
        value = value[:-1]
    if not value:
        return None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


def _cstring(value: bytes) -> str:
    """A C-Octet String TLV value up to its NUL, byte for byte (as_is must stay exact)."""
    return value.split(b"\0", 1)[0].decode("latin-1")


TlvValue = bytes | bytearray | memoryview | str | int


def _octets(value: TlvValue) -> bytes | None:
    """A TLV value as its octets: smsmta.smpp.codec gives C-strings as str (Latin-1, byte for
    byte) and integers as int; raw callers give bytes. An int has no text: None."""
    if isinstance(value, str):
        return value.encode("latin-1", "replace")
    if isinstance(value, int):
        return None
    return bytes(value)


def interpret(
    short_message: bytes | bytearray | memoryview | str,
    tlvs: Sequence[tuple[int, TlvValue]],
    rules: ReceiptRules,
) -> Receipt:
    """Read one receipt (a deliver_sm whose esm_class says receipt). Never raises on input.

    An empty short_message with a message_payload TLV (0x0424) reads the payload instead.
    """
    text = decode_text(short_message)
    tlv_list = tlvs or ()
    payload_used = False
    if not text and tlv_list:
        for tag, value in tlv_list:
            if tag == TAG_MESSAGE_PAYLOAD and (octets := _octets(value)) is not None:
                text = decode_text(octets)
                payload_used = True
                break

    fields, text_at = _scan_annex_b(text)

    # Processed text: the id regex searches it.
    processed = text if rules.id_in_text_field or text_at < 0 else text[:text_at].rstrip()
    tlv_texts: list[str] = []
    if rules.id_in_optional_fields and tlv_list:
        parts = [processed]
        for tag, value in tlv_list:
            if payload_used and tag == TAG_MESSAGE_PAYLOAD:
                continue
            octets = _octets(value)
            tlv_text = _tlv_text(octets) if octets is not None else None
            if tlv_text is not None:
                parts.append(f" 0x{tag & 0xFFFF:04X}:{tlv_text}")
                tlv_texts.append(tlv_text)
        processed = "".join(parts)

    # Id: first regex match with a non-empty capture, else receipted_message_id.
    provider_id: str | None = None
    raw_id: str | None = None
    id_error: str | None = None
    id_source = IdSource.NONE
    for match in rules.id_regex.finditer(processed):
        captured = match.group(1)
        if captured:
            raw_id = captured
            try:
                provider_id = format_id(captured, rules.sr_id_format)
                id_source = IdSource.REGEX
            except ValueError as exc:
                id_error = str(exc)
            break
    else:
        id_error = f"SR id regex {rules.id_regex.pattern!r} found no id"

    stat = fields.get("stat") or None
    err = fields.get("err") or None
    if stat is None or err is None:  # the options' texts may carry them (rare: not hot)
        extra = tlv_texts if not rules.id_in_text_field else [fields.get("text", ""), *tlv_texts]
        for more in extra:
            if ":" not in more:
                continue
            found = _scan_annex_b(more)[0]
            stat = stat or found.get("stat") or None
            err = err or found.get("err") or None
    receipted: str | None = None
    for tag, value in tlv_list:
        if tag == TAG_RECEIPTED_MESSAGE_ID and receipted is None:
            octets = _octets(value)
            if octets is not None:
                receipted = _cstring(octets)
        elif tag == TAG_MESSAGE_STATE and stat is None:
            if isinstance(value, int):
                stat = MESSAGE_STATE_STAT.get(value)
            elif (octets := _octets(value)) is not None and len(octets) == 1:
                stat = MESSAGE_STATE_STAT.get(octets[0])
        elif tag == TAG_NETWORK_ERROR_CODE and err is None:
            octets = _octets(value)
            if octets is not None and len(octets) == 3:
                err = f"{int.from_bytes(octets[1:3], 'big'):03d}"

    overruled: str | None = None
    same = (
        provider_id is not None
        and receipted == raw_id
        and rules.mt_ack_id_format is rules.sr_id_format
    )
    if receipted and not same and not receipted.isspace():  # same: agree, nothing to convert
        try:
            tlv_id = format_id(receipted, rules.mt_ack_id_format)
        except ValueError as exc:
            if provider_id is None:
                id_error = f"{id_error}; receipted_message_id: {exc}"
        else:
            if provider_id != tlv_id:  # no text id, an unreadable one, or a disagreeing one
                if raw_id is not None:
                    overruled = raw_id
                provider_id, raw_id, id_error = tlv_id, receipted, None
                id_source = IdSource.RECEIPTED_MESSAGE_ID

    if stat is not None and len(stat) > MAX_STAT_ERR_LEN:
        stat = stat[:MAX_STAT_ERR_LEN]
    if err is not None and len(err) > MAX_STAT_ERR_LEN:
        err = err[:MAX_STAT_ERR_LEN]

    head = f"SR {rules.smsc_name} {stat or MISSING} {err or MISSING}|"
    return Receipt(
        provider_id=provider_id,
        id_source=id_source,
        id_error=id_error,
        raw_id=raw_id,
        stat=stat,
        err=err,
        outcome=rules.classify(stat),
        text=text,
        log_text=f"{head}MESSAGE={text}",
        log_key=f"{head}#MESSAGE#",
        fields=fields,
        overruled_text_id=overruled,
    )


# Readings tried for the fix, most natural first for the ids providers write.
_FIX_ORDER = (IdFormat.DECIMAL, IdFormat.HEX_NUMBER, IdFormat.AS_IS, IdFormat.HEX_STRING)


def _reading(raw: str, fmt: IdFormat) -> str | None:
    try:
        return format_id(raw, fmt)
    except ValueError:
        return None


def id_disagreement_fix(receipt: Receipt, rules: ReceiptRules) -> str:
    """The setting that would make a receipt's overruled text id agree with its TLV id.

    Tried in order: a text id cut from the TLV's id (`sr_id_regex`); an `sr_id_format` alone
    (the MT-ack id format, which the stored MT ids follow, unchanged); an (`mt_ack_id_format`,
    `sr_id_format`) pair; else a sentence saying no id format reconciles them.
    """
    text_id, tlv_raw = receipt.overruled_text_id, receipt.raw_id
    if text_id is None or tlv_raw is None or receipt.provider_id is None:
        return "the text id and receipted_message_id agree"
    text_key, tlv_key = text_id.strip().casefold(), tlv_raw.strip().casefold()
    if len(tlv_key) > len(text_key) and tlv_key.startswith(text_key):
        return (
            f"sr_id_regex: the text id {text_id!r} is cut from receipted_message_id "
            f"{tlv_raw!r}; capture the whole id"
        )
    for sr_fmt in _FIX_ORDER:
        if _reading(text_id, sr_fmt) == receipt.provider_id:
            return f"sr_id_format: {sr_fmt.value} would make the text id agree"
    for ack_fmt in _FIX_ORDER:
        if ack_fmt is rules.mt_ack_id_format or (tlv := _reading(tlv_raw, ack_fmt)) is None:
            continue
        for sr_fmt in _FIX_ORDER:
            if _reading(text_id, sr_fmt) == tlv:
                return (
                    f"mt_ack_id_format: {ack_fmt.value} with sr_id_format: {sr_fmt.value} "
                    "would make the text id agree"
                )
    return (
        f"no id format makes the text id {text_id!r} agree with receipted_message_id "
        f"{tlv_raw!r}: check that sr_id_regex captures the receipt's id"
    )


# ---------------------------------------------------------------------------------------------
# Synchronous errors
# ---------------------------------------------------------------------------------------------


def submit_error_log(
    smsc_name: str, command_status: int, status_name: str | None = None
) -> tuple[str, str]:
    """Message-log text and key of a non-zero submit_sm_resp: `SUBMIT <smsc> 0x00000058 NAME`.

    The status is 8 upper-case hex digits, followed by its spec name when known (or the
    `status_name` given). A synchronous error carries no provider text, so text == key.
    """
    if not 0 <= command_status <= 0xFFFFFFFF:
        raise ValueError(f"command_status {command_status} is not a 32-bit unsigned integer")
    text = f"SUBMIT {smsc_name} 0x{command_status:08X}"
    name = status_name or constants.status_name(command_status)
    if not name.startswith("0x"):  # a vendor code's name is its hex, already written
        text = f"{text} {name}"
    return text, text
