"""Pulumi's passphrase secrets provider, offline: the `secure:` values of a stack file.

The format, as the Pulumi CLI writes and reads it (pulumi/pulumi
pkg/secrets/passphrase/manager.go and sdk/go/common/resource/config/crypt.go):

- the stack file's `encryptionsalt` is `v1:<base64 salt>:<check>`, where `<check>` is the
  word `pulumi` encrypted with the stack's key (a wrong passphrase fails to decrypt it);
- the key is PBKDF2-HMAC-SHA256 of the passphrase over the salt, 1,000,000 iterations,
  32 bytes;
- a secret is `v1:<base64 nonce>:<base64 ciphertext>`, AES-256-GCM with a 12-byte nonce and
  no associated data (the tag is the ciphertext's last 16 bytes, as Go's `Seal` appends it);
- the passphrase is `PULUMI_CONFIG_PASSPHRASE` when set (even empty), otherwise the
  contents of `PULUMI_CONFIG_PASSPHRASE_FILE`, whitespace-trimmed.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

PBKDF2_ITERATIONS = 1_000_000
KEY_BYTES = 32
NONCE_BYTES = 12
CHECK_PLAINTEXT = "pulumi"


class SecretsError(Exception):
    """A passphrase or secure value that cannot be used; the message names it."""


def passphrase_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The passphrase the CLI would use, or None when neither variable is set."""
    env = os.environ if env is None else env
    if "PULUMI_CONFIG_PASSPHRASE" in env:
        return env["PULUMI_CONFIG_PASSPHRASE"]
    path = env.get("PULUMI_CONFIG_PASSPHRASE_FILE")
    if path:
        try:
            return Path(path).expanduser().resolve().read_text().strip()
        except OSError as e:
            raise SecretsError(
                f"PULUMI_CONFIG_PASSPHRASE_FILE={path!r}: cannot read it ({e.strerror})"
            ) from None
    return None


@lru_cache(maxsize=8)
def _key(passphrase: str, salt: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    kdf = PBKDF2HMAC(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, iterations=PBKDF2_ITERATIONS
    )
    return kdf.derive(passphrase.encode())


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SecretsError(f"{what}: {text!r} is not base64") from None


class PassphraseCrypter:
    """Decrypts the values of one stack: built from its `encryptionsalt` and the passphrase."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_state(cls, state: str, passphrase: str) -> PassphraseCrypter:
        parts = state.split(":", 2)
        if len(parts) != 3:
            raise SecretsError(f"encryptionsalt {state!r} is malformed; expected v1:<salt>:<check>")
        if parts[0] != "v1":
            raise SecretsError(f"encryptionsalt version {parts[0]!r} is unknown; expected v1")
        crypter = cls(_key(passphrase, _b64(parts[1], "encryptionsalt")))
        try:
            check = crypter.decrypt(parts[2])
        except SecretsError:
            check = None
        if check != CHECK_PLAINTEXT:
            raise SecretsError("incorrect passphrase")
        return crypter

    def decrypt(self, value: str) -> str:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        parts = value.split(":")
        if len(parts) != 3:
            raise SecretsError("bad value; expected v1:<nonce>:<ciphertext>")
        if parts[0] != "v1":
            raise SecretsError(f"unknown value version {parts[0]!r}")
        nonce, ciphertext = _b64(parts[1], "nonce"), _b64(parts[2], "ciphertext")
        if len(nonce) != NONCE_BYTES:
            raise SecretsError("bad value: nonce size is incorrect")
        try:
            return AESGCM(self._key).decrypt(nonce, ciphertext, None).decode()
        except InvalidTag:
            raise SecretsError("the value does not decrypt with this stack's key") from None


def is_secure(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"secure"}


def contains_secure(value: Any) -> bool:
    if is_secure(value):
        return True
    if isinstance(value, dict):
        return any(contains_secure(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_secure(v) for v in value)
    return False


def decrypt_value(value: Any, crypter: PassphraseCrypter, key: str) -> Any:
    """`value` with every `{secure: ...}` inside it (structured config too) decrypted."""
    if is_secure(value):
        try:
            return crypter.decrypt(str(value["secure"]))
        except SecretsError as e:
            raise SecretsError(f"config {key!r}: {e}") from None
    if isinstance(value, dict):
        return {k: decrypt_value(v, crypter, key) for k, v in value.items()}
    if isinstance(value, list):
        return [decrypt_value(v, crypter, key) for v in value]
    return value


def stack_crypter(
    stack_doc: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> PassphraseCrypter | None:
    """The crypter of a passphrase-provider stack when a passphrase is given, else None."""
    provider = stack_doc.get("secretsprovider")
    state = stack_doc.get("encryptionsalt")
    if not state or (provider and provider != "passphrase"):
        return None  # a KMS / Vault / Pulumi Cloud provider: only the CLI can decrypt
    passphrase = passphrase_from_env(env)
    if passphrase is None:
        return None
    return PassphraseCrypter.from_state(str(state), passphrase)
