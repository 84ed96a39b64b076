"""Telling a secret from a name, and showing neither by accident.

Configuration names the *environment variables* that hold credentials, never the
credentials themselves. These helpers decide whether a typed value reads as a variable's
name (:func:`plausible_env_name`) or could be a key or token (:func:`looks_secret`), and
how a suspected secret is shown (:func:`redact`): its first two characters and its
length, so a user can recognise what they typed without the message leaking it.
"""

from __future__ import annotations

import re
from typing import Any

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
URL_PASSWORD = re.compile(r"://[^/@\s:]*:[^/@\s]+@")  # https://user:password@host
# an option key containing one of these names a secret, which belongs in credentials_env
SECRET_WORDS = ("secret", "password", "passwd", "passphrase", "token", "key", "credential", "auth", "private",
                "bearer", "cookie", "signature")


def plausible_env_name(text: str) -> bool:
    """Whether ``text`` reads as an environment variable's *name* (``APCA_API_KEY_ID``), not a secret.

    A name is letters, digits and ``_`` (at most 64); each ``_``-separated word is one case
    and at most 16 characters, at most 8 when it holds a digit. Keys and tokens (``PKX7Q2...``,
    ``aB3k...``) are long runs mixing digits and letters or cases, so they fail.
    """
    return isinstance(text, str) and bool(_ENV_NAME.fullmatch(text)) and _plain_words(text)


def _plain_words(text: str) -> bool:
    """Each ``_``-separated word of ``text`` is one case (or Capitalised), short, and short when it holds digits."""
    if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", text):
        return False
    for word in text.split("_"):
        if len(word) > 16 or (word != word.upper() and word[1:] != word[1:].lower()):  # one case, or Capitalised
            return False
        if any(c.isdigit() for c in word) and len(word) > 8:
            return False
    return True


def looks_secret(text: Any) -> bool:
    """Whether a string typed into any setting could be a key or token, so never shown in a message.

    True for 12+ characters with no space that mix digits with letters or upper with lower
    case (or hold ``+/=``), unless it reads as names joined by ``. / - : @`` (an environment
    variable, an instrument id such as ``ESH4.GLBX``, a path). False for numbers, words and
    short text. A heuristic: it errs towards hiding.
    """
    if not isinstance(text, str):
        return False
    stripped = text.strip()
    if len(stripped) < 12 or any(c.isspace() for c in stripped) or plausible_env_name(stripped):
        return False
    try:
        float(stripped.replace("_", ""))
        return False  # a number, however long
    except ValueError:
        pass
    if all(_plain_words(part) for part in re.split(r"[./\\:@-]", stripped) if part):
        return False  # names joined by . / - : @ (BTCUSDT.BINANCE, data/tradebook.duckdb, host:port)
    has_digit = any(c.isdigit() for c in stripped)
    has_upper, has_lower = any(c.isupper() for c in stripped), any(c.islower() for c in stripped)
    return has_digit or (has_upper and has_lower) or any(c in "+/=" for c in stripped)


def redact(text: str) -> str:
    """How a secret (or what may be one) is shown: its first two characters and its length."""
    return f"'{text[:2]}...' ({len(text)} characters, redacted)"
