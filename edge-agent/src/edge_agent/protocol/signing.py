"""Ed25519 signing and verification of release manifests over their canonical JSON."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_agent.protocol.codec import canonical_json
from edge_agent.protocol.errors import ProtocolError, SignatureError
from edge_agent.protocol.manifest import ReleaseManifest


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short, stable name of a public key: the first 16 hex digits of its sha256."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def signing_payload(manifest: ReleaseManifest) -> bytes:
    """The bytes a signature covers: every field but the signature, canonical JSON."""
    return canonical_json(manifest.model_dump(mode="json", exclude={"signature"}))


@dataclass(frozen=True)
class SigningKey:
    """The fleet's private release key (held by the cloud identity only)."""

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def save(self, private_path: Path, public_path: Path) -> None:
        """Write the private key (mode 0600) and the public key, both PEM."""
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        private_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        public_path.parent.mkdir(parents=True, exist_ok=True)
        public_path.write_bytes(public_key_pem(self.public_key))

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as e:
            raise ProtocolError(f"cannot read signing key {path}: {e}") from e
        if not isinstance(key, Ed25519PrivateKey):
            raise ProtocolError(f"{path} is not an Ed25519 private key")
        return cls(key)

    def sign(self, manifest: ReleaseManifest) -> ReleaseManifest:
        """Return a copy of ``manifest`` carrying this key's id and signature."""
        unsigned = manifest.model_copy(update={"key_id": self.key_id, "signature": None})
        signature = self.private_key.sign(signing_payload(unsigned))
        return unsigned.model_copy(update={"signature": base64.b64encode(signature).decode()})


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(path_or_pem: Path | bytes) -> Ed25519PublicKey:
    """Read a fleet public key (PEM) from a file or from bytes."""
    try:
        pem = path_or_pem.read_bytes() if isinstance(path_or_pem, Path) else path_or_pem
        key = serialization.load_pem_public_key(pem)
    except (OSError, ValueError, TypeError) as e:
        raise ProtocolError(f"cannot read fleet public key: {e}") from e
    if not isinstance(key, Ed25519PublicKey):
        raise ProtocolError("fleet public key is not an Ed25519 key")
    return key


def verify_manifest(
    manifest: ReleaseManifest, trusted: Mapping[str, Ed25519PublicKey] | Ed25519PublicKey
) -> None:
    """Raise SignatureError unless ``manifest`` is signed by one of the ``trusted`` keys."""
    keys = {key_id(trusted): trusted} if isinstance(trusted, Ed25519PublicKey) else trusted
    if manifest.signature is None or manifest.key_id is None:
        raise SignatureError(f"release {manifest.release_id} is not signed")
    key = keys.get(manifest.key_id)
    if key is None:
        raise SignatureError(
            f"release {manifest.release_id} is signed by unknown key {manifest.key_id}"
        )
    try:
        signature = base64.b64decode(manifest.signature, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SignatureError(f"release {manifest.release_id}: signature is not base64") from e
    try:
        key.verify(signature, signing_payload(manifest))
    except InvalidSignature as e:
        raise SignatureError(
            f"release {manifest.release_id}: signature does not match its content"
        ) from e
