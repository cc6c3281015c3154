"""Accounts (issue 15): registration that does not reveal who has an account, the password policy, password
changes and resets, and blocking that revokes API keys for good."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from fleet.api.sessions import REFRESH_COOKIE
from fleet.config import Settings
from fleet.db import Database
from fleet.errors import InvalidInput
from fleet.passwords import WeakPassword, check_password, hash_password

from .conftest import PASSWORD, Account, LiveServer, MailHandler, make_account, unique_email


async def outbox(db: Database, recipient: str) -> list[str]:
    async with db.system() as conn:
        rows = await conn.fetch("SELECT subject FROM mail_outbox WHERE recipient = $1 ORDER BY id", recipient)
    return [r["subject"] for r in rows]


async def audit_actions(db: Database, target: str) -> list[str]:
    async with db.system() as conn:
        rows = await conn.fetch("SELECT action FROM admin_audit_log WHERE target = $1 ORDER BY id", target)
    return [r["action"] for r in rows]


async def test_registration_answers_the_same_for_an_existing_address(
    http: httpx.AsyncClient, db: Database, api_settings: Settings
) -> None:
    taken = await make_account(db, api_settings, password_hash=await hash_password(PASSWORD))
    fresh = unique_email("new")
    new = await http.post("/auth/register", json={"email": fresh, "password": PASSWORD})
    again = await http.post("/auth/register", json={"email": taken.email.upper(), "password": PASSWORD})
    assert (new.status_code, again.status_code) == (202, 202)
    assert new.json() == again.json() and set(new.json()) == {"message"}
    assert taken.email not in again.text
    # The owner of the taken address is told; nothing about the account changed.
    assert await outbox(db, taken.email) == ["Fleet Server: registration attempt"]
    assert await outbox(db, fresh) == ["Fleet Server: registration received"]
    async with db.system() as conn:
        status = await conn.fetchval("SELECT status FROM users WHERE id = $1", taken.id)
        attempts = await conn.fetchval(
            "SELECT count(*) FROM admin_audit_log WHERE action = 'auth.register_existing' AND actor_id = $1",
            taken.id,
        )
    assert status == "active" and attempts == 1
    # Repeated attempts do not turn the server into a mail cannon: one such mail per address and hour.
    await http.post("/auth/register", json={"email": taken.email, "password": PASSWORD})
    assert await outbox(db, taken.email) == ["Fleet Server: registration attempt"]


async def test_concurrent_registrations_of_one_address_create_one_account(
    http: httpx.AsyncClient, db: Database
) -> None:
    email = unique_email("race")
    answers = await asyncio.gather(
        *(http.post("/auth/register", json={"email": email, "password": PASSWORD}) for _ in range(4))
    )
    assert {a.status_code for a in answers} == {202}
    assert len({a.text for a in answers}) == 1
    async with db.system() as conn:
        assert await conn.fetchval("SELECT count(*) FROM users WHERE lower(email) = lower($1)", email) == 1


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("password", "at least 10 characters"),
        ("12345678", "at least 10 characters"),
        (" " * 8, "at least 10 characters"),
        (" " * 12, "too easy to guess"),
        ("qwertyuiop", "common passwords"),
        ("1234567890", "common passwords"),
        ("Password123", "common passwords"),
        ("aaaaaaaaaaaa", "too easy to guess"),
        ("1q2w3e4r5t6y", "common passwords"),
        ("abcdefghijkl", "too easy to guess"),
        ("é" * 40, "at most 72 bytes"),
    ],
)
def test_password_policy_refuses(password: str, rule: str) -> None:
    with pytest.raises(WeakPassword, match=rule):
        check_password(password, email="driver.jones@example.com")


def test_password_policy_refuses_the_email_and_accepts_passphrases() -> None:
    for email_derived in (
        "driver.jones@example.com",
        "Driver.Jones@Example.com",
        "driver.jones",
        "driver.jones1",
    ):
        with pytest.raises(WeakPassword):
            check_password(email_derived, email="driver.jones@example.com")
    for good in (PASSWORD, "long-enough-1", "Truck fleet 2026, route 7!", "x7#kL9$mQ2&v"):
        check_password(good, email="driver.jones@example.com")
    assert issubclass(WeakPassword, InvalidInput)


async def test_weak_passwords_are_refused_at_registration_with_a_clear_code(http: httpx.AsyncClient) -> None:
    for password in ("password", "12345678", " " * 8, "1234567890"):
        answer = await http.post("/auth/register", json={"email": unique_email("weak"), "password": password})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "weak_password", password
    email = unique_email("self")
    answer = await http.post("/auth/register", json={"email": email, "password": email})
    assert answer.status_code == 400 and "e-mail" in answer.json()["error"]["message"]


async def test_blocking_revokes_api_keys_for_good(
    live_api: LiveServer, db: Database, api_settings: Settings, admin: Account
) -> None:
    owner = await make_account(db, api_settings, password_hash=await hash_password(PASSWORD))
    async with httpx.AsyncClient(base_url=live_api.url) as client:
        created = await client.post("/auth/api-keys", json={"name": "script"}, headers=owner.headers)
        key = {"Authorization": f"Bearer {created.json()['key']}"}
        assert (await client.get("/vehicles", headers=key)).status_code == 200
        blocked = await client.post(f"/admin/users/{owner.id}/block", headers=admin.headers)
        assert blocked.status_code == 200
        for route in (f"/admin/users/{owner.id}/approve", f"/admin/users/{owner.id}/unblock"):
            back = await client.post(route, headers=admin.headers)
            assert back.status_code == 200 and back.json()["status"] == "active", back.text
            answer = await client.get("/vehicles", headers=key)
            assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"
            await client.post(f"/admin/users/{owner.id}/block", headers=admin.headers)
        unblocked = await client.post(f"/admin/users/{owner.id}/unblock", headers=admin.headers)
        assert unblocked.status_code == 200
        assert (
            await client.post(f"/admin/users/{owner.id}/unblock", headers=admin.headers)
        ).status_code == 409
        # The account itself is back: a new sign-in and a new key work.
        login = await client.post("/auth/login", json={"email": owner.email, "password": PASSWORD})
        assert login.status_code == 200
        listed = await client.get(
            "/auth/api-keys", headers={"Authorization": f"Bearer {login.json()['access_token']}"}
        )
        assert all(item["revoked_at"] is not None for item in listed.json()["items"])
    async with db.system() as conn:
        details = await conn.fetchval(
            """SELECT details FROM admin_audit_log WHERE action = 'user.block' AND target = $1
               ORDER BY id LIMIT 1""",
            f"user:{owner.id}",
        )
    assert details["api_keys_revoked"] == 1 and details["sessions_revoked"] >= 1
    assert "user.unblock" in await audit_actions(db, f"user:{owner.id}")


async def test_changing_your_own_password(
    live_api: LiveServer, db: Database, api_settings: Settings, smtp_server: tuple[MailHandler, int]
) -> None:
    owner = await make_account(db, api_settings, password_hash=await hash_password(PASSWORD))
    async with (
        httpx.AsyncClient(base_url=live_api.url) as laptop,
        httpx.AsyncClient(base_url=live_api.url) as phone,
    ):
        tokens = []
        for device in (laptop, phone):
            login = await device.post("/auth/login", json={"email": owner.email, "password": PASSWORD})
            tokens.append({"Authorization": f"Bearer {login.json()['access_token']}"})
        new = "a whole new passphrase 42"
        wrong = await laptop.post(
            "/auth/password",
            json={"current_password": "not it at all", "new_password": new},
            headers=tokens[0],
        )
        assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "wrong_password"
        weak = await laptop.post(
            "/auth/password",
            json={"current_password": PASSWORD, "new_password": "12345678"},
            headers=tokens[0],
        )
        assert weak.status_code == 400 and weak.json()["error"]["code"] == "weak_password"
        changed = await laptop.post(
            "/auth/password", json={"current_password": PASSWORD, "new_password": new}, headers=tokens[0]
        )
        # the phone and the session make_account opened
        assert changed.status_code == 200 and changed.json()["other_sessions_ended"] == 2, changed.text
        # This session goes on; the phone's ends; the old password is gone.
        assert (await laptop.get("/vehicles", headers=tokens[0])).status_code == 200
        assert (await laptop.post("/auth/refresh")).status_code == 200
        assert (await phone.get("/vehicles", headers=tokens[1])).status_code == 401
        old = await phone.post("/auth/login", json={"email": owner.email, "password": PASSWORD})
        assert old.status_code == 401
        assert (
            await phone.post("/auth/login", json={"email": owner.email, "password": new})
        ).status_code == 200
    assert "Fleet Server: password changed" in await outbox(db, owner.email)
    assert "user.password_change" in await audit_actions(db, f"user:{owner.id}")


async def test_google_only_accounts_cannot_set_a_password_from_a_token(
    http: httpx.AsyncClient, db: Database, api_settings: Settings
) -> None:
    google_only = await make_account(db, api_settings)  # no password hash
    answer = await http.post(
        "/auth/password",
        json={"current_password": "anything at all", "new_password": "a whole new passphrase 42"},
        headers=google_only.headers,
    )
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "no_password"


async def test_an_administrator_resets_a_password(
    live_api: LiveServer, db: Database, api_settings: Settings, admin: Account
) -> None:
    owner = await make_account(db, api_settings, password_hash=await hash_password(PASSWORD))
    async with httpx.AsyncClient(base_url=live_api.url) as client:
        weak = await client.post(
            f"/admin/users/{owner.id}/password", json={"password": "password1"}, headers=admin.headers
        )
        assert weak.status_code == 400 and weak.json()["error"]["code"] == "weak_password"
        forbidden = await client.post(
            f"/admin/users/{admin.id}/password", json={"password": "x7#kL9$mQ2&v"}, headers=owner.headers
        )
        assert forbidden.status_code == 403
        reset = await client.post(
            f"/admin/users/{owner.id}/password",
            json={"password": "reset by the admin 2026"},
            headers=admin.headers,
        )
        assert reset.status_code == 200, reset.text
        assert (await client.get("/vehicles", headers=owner.headers)).status_code == 401  # signed out
        client.cookies.clear()
        login = await client.post(
            "/auth/login", json={"email": owner.email, "password": "reset by the admin 2026"}
        )
        assert login.status_code == 200 and REFRESH_COOKIE in login.cookies
    assert "Fleet Server: password reset" in await outbox(db, owner.email)
    assert "user.password_reset" in await audit_actions(db, f"user:{owner.id}")
