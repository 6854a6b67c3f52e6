"""The character tables of 3GPP TS 23.038 (ex GSM 03.38), as data.

What it holds: the GSM 7-bit default alphabet and its extension table (section 6.2.1),
and the national language locking shift tables (Annex A.3) and single shift tables
(Annex A.2) for the languages smsmta supports: Turkish (language id 1), Spanish (2) and
Portuguese (3). Spanish has no locking shift table (A.3.2 is void).

Contract: a locking shift table is a 128-character string indexed by septet, with
UNDEFINED at 0x1B (the escape to the single shift table). A single shift table is a dict
septet -> character of the characters reached through the escape. Nothing else lives
here; `smsmta.smpp.text` builds its encoders and decoders from these tables at import. Touches
nothing.
"""

from __future__ import annotations

UNDEFINED = "\uffff"
"""Placeholder for a septet that is not a character (0x1B, the escape)."""

ESCAPE = 0x1B

# Rows of 16 septets: 0x00, 0x10, ..., 0x70.
DEFAULT_ALPHABET = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\uffffÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)

DEFAULT_EXTENSION: dict[int, str] = {
    0x0A: "\f",  # page break
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

# A.3.1 Turkish National Language Locking Shift Table.
TURKISH_LOCKING = (
    "@£$¥€éùıòÇ\nĞğ\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\uffffŞşßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "İABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "çabcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)

# A.2.1 Turkish National Language Single Shift Table.
TURKISH_SINGLE: dict[int, str] = {
    **DEFAULT_EXTENSION,
    0x47: "Ğ",
    0x49: "İ",
    0x53: "Ş",
    0x63: "ç",
    0x67: "ğ",
    0x69: "ı",
    0x73: "ş",
}

# A.2.2 Spanish National Language Single Shift Table (no locking shift table).
SPANISH_SINGLE: dict[int, str] = {
    **DEFAULT_EXTENSION,
    0x09: "ç",
    0x41: "Á",
    0x49: "Í",
    0x4F: "Ó",
    0x55: "Ú",
    0x61: "á",
    0x69: "í",
    0x6F: "ó",
    0x75: "ú",
}

# A.3.3 Portuguese National Language Locking Shift Table.
PORTUGUESE_LOCKING = (
    "@£$¥êéúíóç\nÔô\rÁá"
    "Δ_ªÇÀ∞^\\€Ó|\uffffÂâÊÉ"
    " !\"#º%&'()*+,-./"
    "0123456789:;<=>?"
    "ÍABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÃÕÚÜ§"
    "~abcdefghijklmno"
    "pqrstuvwxyzãõ`üà"
)

# A.2.3 Portuguese National Language Single Shift Table.
PORTUGUESE_SINGLE: dict[int, str] = {
    **DEFAULT_EXTENSION,
    0x05: "ê",
    0x09: "ç",
    0x0B: "Ô",
    0x0C: "ô",
    0x0E: "Á",
    0x0F: "á",
    0x12: "Φ",
    0x13: "Γ",
    0x15: "Ω",
    0x16: "Π",
    0x17: "Ψ",
    0x18: "Σ",
    0x19: "Θ",
    0x1F: "Ê",
    0x41: "À",
    0x49: "Í",
    0x4F: "Ó",
    0x55: "Ú",
    0x5B: "Ã",
    0x5C: "Õ",
    0x61: "Â",
    0x69: "í",
    0x6F: "ó",
    0x75: "ú",
    0x7B: "ã",
    0x7C: "õ",
    0x7F: "â",
}

TURKISH = 1
SPANISH = 2
PORTUGUESE = 3

LANGUAGE_NAMES: dict[int, str] = {TURKISH: "turkish", SPANISH: "spanish", PORTUGUESE: "portuguese"}

LOCKING_SHIFT_TABLES: dict[int, str] = {
    TURKISH: TURKISH_LOCKING,
    PORTUGUESE: PORTUGUESE_LOCKING,
}

SINGLE_SHIFT_TABLES: dict[int, dict[int, str]] = {
    TURKISH: TURKISH_SINGLE,
    SPANISH: SPANISH_SINGLE,
    PORTUGUESE: PORTUGUESE_SINGLE,
}

# Nearest equivalents for transliteration, tried before Unicode decomposition (NFKD with
# the combining marks dropped, which already turns "ê" into "e" and "…" into "...").
# Candidates in order of preference: the first the target encoding takes wins; "" drops
# an invisible character.
EQUIVALENTS: dict[str, tuple[str, ...]] = {
    "œ": ("oe",),
    "Œ": ("OE",),
    "æ": ("ae",),
    "Æ": ("AE",),
    "ß": ("ss",),
    "ø": ("o",),
    "Ø": ("O",),
    "đ": ("d",),
    "Đ": ("D",),
    "ð": ("d",),
    "Ð": ("D",),
    "þ": ("th",),
    "Þ": ("TH",),
    "ł": ("l",),
    "Ł": ("L",),
    "ħ": ("h",),
    "Ħ": ("H",),
    "ı": ("i",),
    "ŀ": ("l",),
    "Ŀ": ("L",),
    "ĸ": ("k",),
    "ŧ": ("t",),
    "Ŧ": ("T",),
    "ç": ("c", "Ç"),
    "‘": ("'",),
    "’": ("'",),
    "‚": ("'", ","),
    "‛": ("'",),
    "′": ("'",),
    "ʼ": ("'",),
    "`": ("'",),
    "´": ("'",),
    "‹": ("'", "<"),
    "›": ("'", ">"),
    "“": ('"',),
    "”": ('"',),
    "„": ('"',),
    "‟": ('"',),
    "″": ('"',),
    "«": ('"',),
    "»": ('"',),
    "¨": ('"',),
    "¸": (",",),
    "˜": ("~",),
    "ˆ": ("^",),
    "‐": ("-",),
    "‑": ("-",),
    "‒": ("-",),
    "–": ("-",),
    "—": ("-",),
    "―": ("-",),
    "−": ("-",),
    "⁃": ("-",),
    "¬": ("-",),
    "¯": ("-",),
    "•": ("*", "-"),
    "·": (".",),
    "⁄": ("/",),
    "∕": ("/",),
    "\t": (" ",),
    "\u2028": ("\n",),
    "\u2029": ("\n",),
    "\u00ad": ("",),  # soft hyphen
    "\u200b": ("",),  # zero-width space
    "\u200c": ("",),
    "\u200d": ("",),
    "\u2060": ("",),
    "\ufeff": ("",),
    "\ufe0e": ("",),  # variation selectors
    "\ufe0f": ("",),
    "€": ("EUR",),
    "£": ("GBP",),
    "¥": ("JPY",),
    "¢": ("c",),
    "¤": ("$",),
    "©": ("(c)",),
    "®": ("(R)",),
    "°": ("o",),
    "×": ("x",),
    "÷": ("/",),
    "±": ("+/-",),
    "¦": ("|",),
    "µ": ("u",),
    "§": ("S",),
    "¡": ("!",),
    "¿": ("?",),
    "[": ("(",),
    "]": (")",),
    "{": ("(",),
    "}": (")",),
    # Greek capitals that look like Latin ones (GSM has only the others)
    "Α": ("A",),
    "Β": ("B",),
    "Ε": ("E",),
    "Ζ": ("Z",),
    "Η": ("H",),
    "Ι": ("I",),
    "Κ": ("K",),
    "Μ": ("M",),
    "Ν": ("N",),
    "Ο": ("O",),
    "Ρ": ("P",),
    "Τ": ("T",),
    "Υ": ("Y",),
    "Χ": ("X",),
}
