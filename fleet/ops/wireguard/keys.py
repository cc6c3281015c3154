"""WireGuard keys: Curve25519 (X25519) key pairs and preshared keys, base64 as `wg` prints them."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat


@dataclass(frozen=True, slots=True)
class KeyPair:
    private_key: str
    public_key: str


def generate_keypair() -> KeyPair:
    """A new key pair (what `wg genkey | tee priv | wg pubkey` gives)."""
    private = X25519PrivateKey.generate()
    raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return KeyPair(base64.b64encode(raw).decode(), public_key_of(base64.b64encode(raw).decode()))


def public_key_of(private_key: str) -> str:
    """The public key of a base64 private key."""
    raw = base64.b64decode(private_key, validate=True)
    if len(raw) != 32:
        raise ValueError("a WireGuard key is 32 bytes")
    public = X25519PrivateKey.from_private_bytes(raw).public_key()
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def generate_preshared_key() -> str:
    """32 random bytes (`wg genpsk`): a symmetric layer on top of the key exchange."""
    return base64.b64encode(os.urandom(32)).decode()
