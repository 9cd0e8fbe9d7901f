"""Certificates and keys for a loopback control plane: a CA (which also signs client certificates
of users), the apiserver's serving certificate (127.0.0.1, localhost and the in-cluster names), the
service-account signing key, and the front proxy's own CA and client certificate (the identity the
apiserver uses towards aggregated APIs)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

_SERVING_NAMES = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
FRONT_PROXY_CLIENT = (
    "front-proxy-client"  # the CN aggregated API servers accept (requestheader-allowed-names)
)
Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path
    front_proxy_ca: Path
    proxy_client_cert: Path
    proxy_client_key: Path


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _pem_key(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)


def make_ca(common_name: str, days: int = 30) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate and its key."""
    not_before, not_after = _validity(days)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def sign(
    ca: tuple[x509.Certificate, Key],
    common_name: str,
    *,
    organizations: tuple[str, ...] = (),
    dns_names: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    server: bool = False,
    days: int = 30,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate signed by `ca`: a client (CN = user, O = groups, as Kubernetes reads
    them) or, with `server`, a serving certificate for `dns_names` and `ips`."""
    ca_cert, ca_key = ca
    not_before, not_after = _validity(days)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    subject += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    usage = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def write_pair(cert: x509.Certificate, key: Key, cert_path: Path, key_path: Path) -> Pair:
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(_pem_key(key))
    key_path.chmod(0o600)
    return Pair(cert_path, key_path)


def load_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, Key]:
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TypeError(f"{key_path}: not an EC or RSA key")
    return x509.load_pem_x509_certificate(cert_path.read_bytes()), key


def client_certificate(pki: Pki, directory: Path, user: str, groups: tuple[str, ...] = ()) -> Pair:
    """A client certificate for `user` (in `groups`) that the control plane's apiserver accepts."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = sign(load_ca(pki.ca_cert, pki.ca_key), user, organizations=groups)
    return write_pair(cert, key, directory / f"{user}.crt", directory / f"{user}.key")


def write_pki(directory: Path, days: int = 30, extra_ips: tuple[str, ...] = ()) -> Pki:
    """Write a fresh CA, serving pair, service-account key pair and front-proxy CA and client pair.

    The serving certificate is valid for loopback and `extra_ips` (a node's address, the
    `kubernetes` Service's cluster IP)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca("aikeys-local-ca", days)
    serving = sign(
        ca,
        "kube-apiserver",
        dns_names=tuple(_SERVING_NAMES),
        ips=("127.0.0.1", "::1", *extra_ips),
        server=True,
    )
    front_proxy_ca = make_ca("aikeys-front-proxy-ca", days)
    proxy_client = sign(front_proxy_ca, FRONT_PROXY_CLIENT, days=days)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    pki = Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
        front_proxy_ca=directory / "front-proxy-ca.crt",
        proxy_client_cert=directory / "front-proxy-client.crt",
        proxy_client_key=directory / "front-proxy-client.key",
    )
    write_pair(*ca, pki.ca_cert, pki.ca_key)
    write_pair(*serving, pki.serving_cert, pki.serving_key)
    write_pair(*proxy_client, pki.proxy_client_cert, pki.proxy_client_key)
    pki.front_proxy_ca.write_bytes(front_proxy_ca[0].public_bytes(serialization.Encoding.PEM))
    pki.sa_key.write_bytes(_pem_key(sa_key))
    pki.sa_key.chmod(0o600)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki
