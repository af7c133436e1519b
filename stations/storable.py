"""Values PostgreSQL cannot store, found in a partner's JSON before a bulk write fails on them.

A feed page is written with one COPY per table, so a single value the database refuses (a NUL byte, a lone
surrogate, NaN, JSON nested thousands deep) used to fail the whole page, and every later run at the same
object. These checks find such a value in one object so that object alone is rejected, and make what we keep
of a rejected object storable. Nothing here is OCPI-specific: the receivers' shared field checks could reuse it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

# orjson's own nesting limit; an OCPI Location is about six levels deep, a hub's extra fields a few more.
MAX_DEPTH = 255
# PostgreSQL `integer` (Django's PositiveIntegerField): larger numbers fail the COPY.
INTEGER_MAX = 2_147_483_647
# What is kept of a rejected object: deeper parts are replaced by a note (the reason says what was wrong).
KEPT_DEPTH = 32
NOT_KEPT = "(nested deeper; not kept)"

# An escaped NUL in JSON text, not preceded by an escaped backslash (`\\u0000` is the text "\u0000").
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class UnstorableValue(ValueError):
    """A value in a partner's JSON that the database cannot hold; the message names where it is."""


def checked_json_bytes(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact UTF-8 JSON of `value`; raises UnstorableValue for NaN, infinities, NUL, lone surrogates, deep nesting.

    The fast path is orjson's own output: it refuses lone surrogates and nesting over 255 levels, writes NaN as
    `null` and NUL as an escape, so only an object whose text shows one of those is walked value by value.
    """
    option = orjson.OPT_SORT_KEYS if sort_keys else 0
    try:
        text = orjson.dumps(value, option=option)
    except orjson.JSONEncodeError:
        find_unstorable(value)
        # Nothing unstorable: integers beyond 64 bits, which jsonb (numeric) holds.
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False).encode()
    if b"null" in text or (b"\\u0000" in text and _ESCAPED_NUL.search(text)):
        find_unstorable(value)
    return text


def find_unstorable(value: Any) -> None:
    """Raise UnstorableValue naming the first value (by its path) that PostgreSQL cannot store."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                raise UnstorableValue(f"{_shown(path)}: {problem}")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise UnstorableValue(f"{_shown(path)}: {item!r} is not a JSON number")
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise UnstorableValue(f"{_shown(path)}: nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                children = []
                for key, child in item.items():
                    key_text = str(key)
                    problem = text_problem(key_text)
                    if problem:
                        raise UnstorableValue(f"{_shown(path)}: a key {problem}")
                    children.append((child, f"{path}.{key_text}" if path else key_text, depth + 1))
            else:
                children = [(child, f"{path}[{index}]", depth + 1) for index, child in enumerate(item)]
            stack.extend(reversed(children))  # depth first, in document order


def text_problem(text: str) -> str:
    """Why PostgreSQL cannot store this text (empty when it can)."""
    if "\x00" in text:
        return "contains a NUL byte (\\u0000)"
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return "contains a lone surrogate (not valid Unicode)"
    return ""


def integer_problem(value: Any, *, maximum: int = INTEGER_MAX) -> str:
    """Why a JSON number cannot be a non-negative integer column (empty when it can)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a non-negative integer, got {storable_repr(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a non-negative integer, got {value!r}"
    if value < 0 or value != int(value):
        return f"must be a non-negative integer, got {storable_repr(value)}"
    if value > maximum:
        return f"out of range: {storable_repr(value)} (at most {maximum})"
    return ""


def storable_text(text: str) -> str:
    """`text` with NUL bytes and lone surrogates replaced by U+FFFD, so any column can hold it."""
    if text_problem(text):
        text = text.replace("\x00", "\ufffd").encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def storable_repr(value: Any, limit: int = 80) -> str:
    """A short, storable rendering of a partner's value for an error message."""
    shown = repr(value)
    if len(shown) > limit:
        shown = shown[: limit - 3] + "..."
    return storable_text(shown)


def storable_copy(value: Any, depth: int = 0) -> Any:
    """A copy of a partner's JSON that jsonb can hold: NUL and lone surrogates replaced, NaN and infinities
    as text, nesting below KEPT_DEPTH replaced by a note. For keeping a rejected object for staff."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict | list):
        if depth >= KEPT_DEPTH:
            return NOT_KEPT
        if isinstance(value, dict):
            return {storable_text(str(k)): storable_copy(v, depth + 1) for k, v in value.items()}
        return [storable_copy(v, depth + 1) for v in value]
    return value


def _shown(path: str, limit: int = 120) -> str:
    path = storable_text(path) or "object"
    return path if len(path) <= limit else path[: limit - 3] + "..."


# A JSON string (escapes included) or a bracket: enough to follow nesting without parsing.
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def shallower_json(text: str, max_depth: int) -> str:
    """JSON `text` with every array or object nested deeper than `max_depth` replaced by `null`.

    For a page the JSON parser refuses as too deep (about 1,000 levels in Python): the rest of the page can be
    read, and the object that held the deep part, still deeper than MAX_DEPTH, is rejected on its own.
    """
    parts: list[str] = []
    kept_until = 0
    depth = 0
    cut_from = -1
    for token in _JSON_TOKENS.finditer(text):
        char = text[token.start()]
        if char == '"':
            continue
        if char in "[{":
            depth += 1
            if depth == max_depth + 1:
                cut_from = token.start()
        else:
            if depth == max_depth + 1 and cut_from >= 0:
                parts.append(text[kept_until:cut_from])
                parts.append("null")
                kept_until = token.end()
                cut_from = -1
            depth -= 1
    parts.append(text[kept_until:])
    return "".join(parts)
