"""Credentials tokens: how we create, store and read them."""

from __future__ import annotations

import base64
import hashlib
import secrets

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


def new_token() -> str:
    """A fresh credentials token (printable ASCII, well under OCPI's 64 characters)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _fernet() -> Fernet:
    key = settings.OCPI_TOKEN_ENCRYPTION_KEY
    if not key:
        # Development default: a key derived from SECRET_KEY; production sets its own.
        key = base64.urlsafe_b64encode(hashlib.sha256(settings.SECRET_KEY.encode()).digest()).decode()
    return Fernet(key)


def encrypt_token(token: str) -> str:
    return _fernet().encrypt(token.encode()).decode()


def decrypt_token(ciphertext: str) -> str:
    if not ciphertext:
        return ""
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("stored partner token cannot be decrypted with the configured key") from exc


def authorization_header(token: str, raw: bool = False) -> str:
    """`Token <base64(token)>` as 2.2.1 requires; raw for partners still on the old habit."""
    return f"Token {token}" if raw else f"Token {base64.b64encode(token.encode()).decode()}"


def tokens_in_header(header: str) -> list[str]:
    """Candidate tokens in an Authorization header: the Base64-decoded one first, then the raw text."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "token" or not value:
        return []
    candidates = []
    try:
        decoded = base64.b64decode(value, validate=True).decode()
        if decoded and decoded.isprintable():
            candidates.append(decoded)
    except ValueError:
        # Not Base64 (binascii.Error), not UTF-8 (UnicodeDecodeError), or not even ASCII: a header's bytes
        # arrive as Latin-1 text, and b64decode refuses non-ASCII text with a plain ValueError.
        pass
    candidates.append(value)
    return candidates
