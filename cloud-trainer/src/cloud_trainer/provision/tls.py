"""The fleet's private CA: broker server certificates, device client certificates and the CRL."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud_trainer.provision.atomic_files import atomic_write

CA_DAYS = 3650
LEAF_DAYS = 825  # what browsers and most TLS stacks still accept for a leaf
_BACKDATE = timedelta(minutes=5)  # tolerate a device clock a little behind


class CertificateError(ValueError):
    """A certificate or key is missing, unreadable, or not what was expected."""


@dataclass(frozen=True)
class IssuedCertificate:
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    @property
    def serial_hex(self) -> str:
        return format(self.certificate.serial_number, "x")

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def save(self, cert_path: Path, key_path: Path, key_mode: int = 0o600) -> None:
        atomic_write(key_path, self.key_pem(), key_mode)
        atomic_write(cert_path, self.cert_pem(), 0o644)


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass(frozen=True)
class CertificateAuthority:
    """An ECDSA P-256 CA. Its key signs the broker's and devices' certificates, nothing else."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(
        cls, common_name: str = "edge-mlops fleet CA", organization: str = "edge-mlops"
    ) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        name = _name(common_name, organization)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as e:
            raise CertificateError(f"cannot read the CA ({cert_path}, {key_path}): {e}") from e
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError(f"{key_path} is not an EC private key")
        if cert.public_key() != key.public_key():
            raise CertificateError(f"{key_path} does not belong to {cert_path}")
        return cls(cert, key)

    def save(self, cert_path: Path, key_path: Path) -> None:
        key_pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        atomic_write(key_path, key_pem, 0o600)
        atomic_write(cert_path, self.cert_pem(), 0o644)

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def _leaf(
        self,
        common_name: str,
        usage: x509.ObjectIdentifier,
        san: list[x509.GeneralName] | None,
        days: int,
    ) -> IssuedCertificate:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        organization = self.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        org = str(organization[0].value) if organization else "edge-mlops"
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, org))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.private_key.public_key()),
                critical=False,
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return IssuedCertificate(builder.sign(self.private_key, hashes.SHA256()), key)

    def issue_server(self, hostnames: list[str], days: int = LEAF_DAYS) -> IssuedCertificate:
        """A broker certificate valid for every name or IP address in ``hostnames``."""
        if not hostnames:
            raise CertificateError("a server certificate needs at least one hostname")
        san: list[x509.GeneralName] = []
        for host in dict.fromkeys(hostnames):
            try:
                san.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                san.append(x509.DNSName(host))
        return self._leaf(hostnames[0], ExtendedKeyUsageOID.SERVER_AUTH, san, days)

    def issue_client(self, common_name: str, days: int = LEAF_DAYS) -> IssuedCertificate:
        """A client certificate whose CN the broker takes as the username."""
        return self._leaf(common_name, ExtendedKeyUsageOID.CLIENT_AUTH, None, days)

    def crl_pem(self, revoked_serials: list[str], days: int = 30) -> bytes:
        """A CRL listing ``revoked_serials`` (hex); the broker refuses those certificates."""
        now = datetime.now(UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now - _BACKDATE)
            .next_update(now + timedelta(days=days))
        )
        for serial in revoked_serials:
            revoked = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(serial, 16))
                .revocation_date(now - _BACKDATE)
                .build()
            )
            builder = builder.add_revoked_certificate(revoked)
        crl = builder.sign(self.private_key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.PEM)
