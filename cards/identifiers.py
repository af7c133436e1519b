"""Card identifiers: RFID UID normalisation and eMAID (contract id) format and check digit.

The eMAID check digit is the eMI3 / ISO 15118 "Check Digit Calculation for Contract-IDs":
each of the 15 characters is a value 0..35, split into q = value // 9 (two bits over Z2) and
r = value % 9 (two trits over Z3). Position i (1-based) multiplies the q-vector by P1^i over Z2
and the r-vector by P2^i over Z3; the check digit is the character that makes both sums zero.
"""

from __future__ import annotations

import re

from roaming.ocpi.input import InvalidInput

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_P1 = ((0, 1), (1, 1))  # over Z2, order 3
_P2 = ((0, 1), (1, 2))  # over Z3, order 8

# Country (2 letters), provider (3 alnum), instance (9 alnum), optional check digit; separators optional.
EMAID_PATTERN = re.compile(
    r"^(?P<country>[A-Z]{2})-?(?P<provider>[A-Z0-9]{3})-?(?P<instance>[A-Z0-9]{9})(?:-?(?P<check>[A-Z0-9]))?$"
)
_RFID_SEPARATORS = re.compile(r"[\s:\-]")
_HEX = re.compile(r"^[0-9A-F]+$")


class InvalidIdentifier(InvalidInput):
    """An identifier that does not have the required form; the message says why."""


def _matmul(a: tuple, b: tuple, mod: int) -> tuple:
    return tuple(tuple(sum(a[i][k] * b[k][j] for k in range(2)) % mod for j in range(2)) for i in range(2))


def _powers(matrix: tuple, mod: int, count: int) -> list[tuple]:
    powers, current = [], matrix
    for _ in range(count):
        powers.append(current)
        current = _matmul(current, matrix, mod)
    return powers


_P1_POWERS = _powers(_P1, 2, 15)
_P2_POWERS = _powers(_P2, 3, 15)


def _contribution(value: int, position: int) -> tuple[int, int, int, int]:
    """(q-vector times P1^position, r-vector times P2^position) for one character value."""
    q, r = divmod(value, 9)
    qv, rv = (q // 2, q % 2), (r // 3, r % 3)
    p1, p2 = _P1_POWERS[position - 1], _P2_POWERS[position - 1]
    return (
        (qv[0] * p1[0][0] + qv[1] * p1[1][0]) % 2,
        (qv[0] * p1[0][1] + qv[1] * p1[1][1]) % 2,
        (rv[0] * p2[0][0] + rv[1] * p2[1][0]) % 3,
        (rv[0] * p2[0][1] + rv[1] * p2[1][1]) % 3,
    )


def emaid_check_digit(body: str) -> str:
    """The check digit of a 14-character eMAID without separators (case-insensitive)."""
    body = body.upper()
    if len(body) != 14 or any(c not in ALPHABET for c in body):
        raise InvalidIdentifier("an eMAID without check digit has 14 letters or digits")
    sums = [0, 0, 0, 0]
    for position, char in enumerate(body, start=1):
        for index, part in enumerate(_contribution(ALPHABET.index(char), position)):
            sums[index] += part
    for candidate in ALPHABET:
        last = _contribution(ALPHABET.index(candidate), 15)
        if all((sums[i] + last[i]) % (2 if i < 2 else 3) == 0 for i in range(4)):
            return candidate
    raise AssertionError("every 14-character body has exactly one check digit")  # pragma: no cover


def normalise_contract_id(value: str) -> str:
    """A valid eMAID in its canonical form `CC-PPP-IIIIIIIII-D`; raises InvalidIdentifier naming the problem.

    Without a check digit the id is accepted and completed; a wrong check digit is refused.
    """
    text = (value or "").strip().upper()
    match = EMAID_PATTERN.match(text)
    if not match:
        raise InvalidIdentifier(
            f"{value!r} is not an eMAID: expected country (2 letters), provider (3), instance (9) "
            "and check digit, e.g. BE-MBP-C12345678-9"
        )
    body = match["country"] + match["provider"] + match["instance"]
    expected = emaid_check_digit(body)
    if match["check"] and match["check"] != expected:
        raise InvalidIdentifier(f"{value!r}: wrong check digit {match['check']} (expected {expected})")
    return f"{match['country']}-{match['provider']}-{match['instance']}-{expected}"


def normalise_uid(value: str, token_type: str = "RFID") -> str:  # noqa: S107
    """The stored form of a token UID: RFID is upper-case hex without separators; others upper-case.

    OCPI Token.uid is a CiString, so upper-casing keeps case-insensitive matches exact.
    """
    text = (value or "").strip()
    if token_type == "RFID":
        text = _RFID_SEPARATORS.sub("", text).upper()
        if not text or not _HEX.match(text):
            raise InvalidIdentifier(f"{value!r} is not an RFID UID: expected hexadecimal digits")
        if len(text) > 36:
            raise InvalidIdentifier(f"{value!r} is longer than 36 characters")
        return text
    text = text.upper()
    if not text or len(text) > 36 or not text.isascii() or not text.isprintable():
        raise InvalidIdentifier(f"{value!r} is not a token UID: 1 to 36 printable ASCII characters")
    return text


def foreign_uid(value: str) -> str:
    """How we keep another eMSP's token uid: as sent, upper-cased (a CiString of up to 36 characters).

    Only our own cards are normalised (hexadecimal RFID); a foreign uid may be any text its eMSP chose.
    """
    return value.upper()


def foreign_uid_lookups(value: str, token_type: str = "RFID") -> list[str]:  # noqa: S107
    """The stored forms a foreign token read as `value` may have: as sent, or normalised (kept by older code)."""
    return list(dict.fromkeys([(value or "").strip().upper(), lookup_uid(value, token_type)]))


def lookup_uid(value: str, token_type: str = "RFID") -> str:  # noqa: S107
    """The form to look a UID up with; never raises (an odd UID simply matches nothing)."""
    try:
        return normalise_uid(value, token_type)
    except InvalidIdentifier:
        return (value or "").strip().upper()
