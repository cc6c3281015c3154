"""Passwords: the policy every new password meets, and bcrypt hashing (cost 12) off the event loop.

The policy follows NIST SP 800-63B §5.1.1.2: a minimum length, no composition rules, and a check against
values known to be common or derived from the account. The common-password list is the one the `zxcvbn`
package ships (the 30,000 most frequent passwords of a 10-million-password corpus); zxcvbn's guess estimate
also refuses what no list holds but any cracker tries first: repeats (`          `), sequences (`1234567890`),
keyboard walks (`1q2w3e4r5t`) and the e-mail address with a digit appended.
"""

from __future__ import annotations

import asyncio
import functools

import bcrypt

from fleet.errors import InvalidInput

BCRYPT_COST = 12
# bcrypt only reads the first 72 bytes; longer inputs are refused rather than silently truncated.
MAX_PASSWORD_BYTES = 72
MIN_PASSWORD_LENGTH = 10
# zxcvbn's score 2 ("somewhat guessable"): at least 10**6 guesses. Sign-in is rate limited per address, so
# this bounds an online attack; the list and the account-derived checks catch the likeliest guesses.
MIN_GUESSES_LOG10 = 6
# Words an attacker tries against this service in particular.
SERVICE_WORDS = ("fleet", "fleetserver", "telematics", "navtelecom", "teltonika")


class WeakPassword(InvalidInput):
    """A password the policy refuses; the message says which rule and never repeats the password."""

    default_code = "weak_password"


@functools.cache
def _common_passwords() -> frozenset[str]:
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(word.lower() for word in FREQUENCY_LISTS["passwords"])


def _account_words(email: str | None) -> list[str]:
    if not email:
        return list(SERVICE_WORDS)
    address = email.strip().lower()
    local, _, domain = address.partition("@")
    words = [address, local, domain.split(".")[0], *SERVICE_WORDS]
    return [w for w in words if w]


def check_password(password: str, *, email: str | None = None) -> None:
    """Raise WeakPassword when `password` does not meet the policy (for the account `email`, when known)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise WeakPassword(f"password must be at most {MAX_PASSWORD_BYTES} bytes")
    lowered = password.lower()
    if email and lowered.strip() in {email.strip().lower(), email.strip().lower().partition("@")[0]}:
        raise WeakPassword("password must not be the e-mail address")
    if lowered in _common_passwords():
        raise WeakPassword("this password is on a list of common passwords; choose another")
    from zxcvbn import zxcvbn

    estimate = zxcvbn(password, user_inputs=_account_words(email))
    if float(estimate["guesses_log10"]) < MIN_GUESSES_LOG10:
        hint = estimate.get("feedback", {}).get("warning") or "it follows a pattern that is guessed early"
        raise WeakPassword(f"this password is too easy to guess ({hint.rstrip('.')}); use a longer phrase")


def hash_password_sync(password: str, cost: int = BCRYPT_COST) -> str:
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=cost)).decode("ascii")


def verify_password_sync(password: str, hashed: str | None) -> bool:
    if not hashed:
        return False
    try:
        return bcrypt.checkpw(password.encode("utf-8")[:MAX_PASSWORD_BYTES], hashed.encode("ascii"))
    except ValueError:
        return False


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(hash_password_sync, password)


async def verify_password(password: str, hashed: str | None) -> bool:
    return await asyncio.to_thread(verify_password_sync, password, hashed)


async def check_and_hash(password: str, *, email: str | None = None) -> str:
    """Apply the policy and hash, both off the event loop (zxcvbn takes milliseconds on long inputs)."""

    def work() -> str:
        check_password(password, email=email)
        return hash_password_sync(password)

    return await asyncio.to_thread(work)
