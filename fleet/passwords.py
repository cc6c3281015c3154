"""Password hashing with bcrypt (cost 12), off the event loop."""

from __future__ import annotations

import asyncio

import bcrypt

BCRYPT_COST = 12
# bcrypt only reads the first 72 bytes; longer inputs are refused rather than silently truncated.
MAX_PASSWORD_BYTES = 72
MIN_PASSWORD_LENGTH = 8


def validate_password(password: str) -> None:
    """Raise InvalidInput for a password the server will not accept."""
    from fleet.errors import InvalidInput

    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise InvalidInput(f"password must be at most {MAX_PASSWORD_BYTES} bytes")


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
