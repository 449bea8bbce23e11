"""Normalizing and hashing customer identifiers as ad platforms' custom audiences require.

- e-mail: surrounding whitespace removed, lower-cased;
- phone: E.164 (``+`` country code and number, digits only): a number that starts with ``+`` or
  ``00`` keeps its country code; otherwise a leading trunk ``0`` is dropped and the default
  country code is put in front. Fewer than 8 or more than 15 digits is not a phone number;
- then SHA-256 of the UTF-8 text, as lower-case hex.
"""

from __future__ import annotations

import hashlib
import re

_NOT_DIGIT = re.compile(r"\D")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_email(value: object) -> str | None:
    """The e-mail address as platforms hash it, or None when it is not one."""
    if not isinstance(value, str):
        return None
    email = value.strip().lower()
    return email if _EMAIL.match(email) else None


def normalize_phone(value: object, default_country_code: str = "1") -> str | None:
    """The phone number in E.164, or None when it cannot be one."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    digits = _NOT_DIGIT.sub("", text)
    if text.startswith("+"):
        number = digits
    elif digits.startswith("00"):
        number = digits[2:]
    else:
        number = default_country_code + digits.removeprefix("0")
    if not 8 <= len(number) <= 15 or number.startswith("0"):
        return None
    return "+" + number


def sha256_hex(text: str) -> str:
    """SHA-256 of ``text`` (UTF-8), lower-case hex."""
    return hashlib.sha256(text.encode()).hexdigest()


def hashed_identifiers(
    traits: dict[str, object], kinds: list[str], default_country_code: str
) -> dict[str, str]:
    """``{"email_sha256": ..., "phone_sha256": ...}`` for the identifiers a customer has."""
    out: dict[str, str] = {}
    if "email" in kinds and (email := normalize_email(traits.get("email"))) is not None:
        out["email_sha256"] = sha256_hex(email)
    if (
        "phone" in kinds
        and (phone := normalize_phone(traits.get("phone"), default_country_code)) is not None
    ):
        out["phone_sha256"] = sha256_hex(phone)
    return out
