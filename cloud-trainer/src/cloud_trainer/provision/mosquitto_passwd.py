"""Mosquitto's password file, read and written in its own PBKDF2-SHA512 (``$7$``) format."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cloud_trainer.provision.atomic_files import atomic_write_text

# mosquitto_passwd 2.x writes ``user:$7$<iterations>$<salt b64>$<hash b64>`` with a 12-byte
# salt and a 64-byte PBKDF2-HMAC-SHA512 digest; the broker reads the iteration count from
# the line, so it can be raised without changing the broker.
PBKDF2_TAG = "7"
DEFAULT_ITERATIONS = 101
SALT_BYTES = 12
DIGEST_BYTES = 64
# ':' separates user and hash; whitespace and control characters would corrupt the file.
_USERNAME = re.compile(r"^[^:\s\x00-\x1f\x7f]{1,128}$")


class PasswordFileError(ValueError):
    """The password file or an entry in it is malformed."""


def check_username(username: str) -> str:
    if not _USERNAME.fullmatch(username):
        raise PasswordFileError(
            f"invalid broker username {username!r}: 1-128 characters, no ':' or whitespace"
        )
    return username


def generate_password() -> str:
    """A 256-bit random password, URL-safe so it survives env files and YAML unquoted."""
    return secrets.token_urlsafe(32)


def hash_password(
    password: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """The hash field of a password-file line, exactly as ``mosquitto_passwd`` writes it."""
    if not password:
        raise PasswordFileError("empty password")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return (
        f"${PBKDF2_TAG}${iterations}$"
        f"{base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    )


def verify_password(password: str, hashed: str) -> bool:
    """True when ``password`` matches a ``$7$`` hash (constant-time comparison)."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != PBKDF2_TAG:
        raise PasswordFileError("not a mosquitto PBKDF2-SHA512 ($7$) hash")
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except (ValueError, binascii.Error) as e:
        raise PasswordFileError(f"malformed $7$ hash: {e}") from e
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(digest, expected)


@dataclass
class MosquittoPasswordFile:
    """The broker's password file as an ordered mapping username -> hash field."""

    path: Path
    entries: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> MosquittoPasswordFile:
        """Read ``path`` (a missing file is an empty one); malformed lines are errors."""
        entries: dict[str, str] = {}
        if not path.exists():
            return cls(path, entries)
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise PasswordFileError(f"cannot read password file {path}: {e}") from e
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep or not user or not hashed.startswith("$"):
                raise PasswordFileError(f"{path}:{number}: expected 'username:$7$...' entry")
            if user in entries:
                raise PasswordFileError(f"{path}:{number}: duplicate user {user!r}")
            entries[user] = hashed
        return cls(path, entries)

    def set_password(
        self, username: str, password: str, iterations: int = DEFAULT_ITERATIONS
    ) -> None:
        self.entries[check_username(username)] = hash_password(password, iterations)

    def remove(self, username: str) -> bool:
        return self.entries.pop(username, None) is not None

    def check(self, username: str, password: str) -> bool:
        hashed = self.entries.get(username)
        return hashed is not None and verify_password(password, hashed)

    def render(self) -> str:
        return "".join(f"{user}:{hashed}\n" for user, hashed in self.entries.items())

    def save(self, mode: int = 0o640) -> None:
        """Write atomically; 0640 so the broker's group can read it and nobody else."""
        atomic_write_text(self.path, self.render(), mode)
