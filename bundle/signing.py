"""Ed25519 keys and signatures for bundles, with `cryptography` (the [bundle] extra).

Keys are PEM files, the format `openssl` reads: the private key PKCS#8 (mode 0600), the public key
SubjectPublicKeyInfo. The signature is the raw 64 bytes over SHA256SUMS, so a laptop without
globmed-edge checks it with `openssl pkeyutl -verify -pubin -inkey KEY.pub -rawin -in SHA256SUMS
-sigfile SHA256SUMS.sig` (OpenSSL 3), which is what install.sh runs before anything else.
A bundle never carries the public key: a key that travels with the bundle proves nothing. The
clinic gets it from its NGO by another way (printed fingerprint, e-mail, a second stick).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from globmed_edge.atomic import atomic_write_bytes
from globmed_edge.deps import require
from globmed_edge.errors import BundleError


def _serialization() -> Any:
    require("cryptography", "bundle")
    from cryptography.hazmat.primitives import serialization

    return serialization


def fingerprint(public_pem: bytes) -> str:
    """sha256 of the raw 32-byte public key, grouped for reading aloud over a phone line."""
    key = _load_public(public_pem, "public key")
    raw = key.public_bytes(_serialization().Encoding.Raw, _serialization().PublicFormat.Raw)
    digest = hashlib.sha256(raw).hexdigest()[:32]
    return ":".join(digest[i:i + 4] for i in range(0, 32, 4))


def keygen(private_path: Path) -> tuple[Path, str]:
    """A new key pair: `private_path` (0600) and `private_path`.pub. Returns (public path, fingerprint).
    An existing key is never overwritten (it may be the only copy of the NGO's key)."""
    serialization = _serialization()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public_path = private_path.with_name(private_path.name + ".pub")
    for p in (private_path, public_path):
        if p.exists():
            raise BundleError(f"{p}: already exists; refusing to overwrite a key (choose another name)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    atomic_write_bytes(private_path, private_pem, mode=0o600)
    atomic_write_bytes(public_path, public_pem, mode=0o644)
    return public_path, fingerprint(public_pem)


def _load_public(pem: bytes, where: str) -> Any:
    serialization = _serialization()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise BundleError(f"{where}: not a PEM public key (make one with `globmed-edge bundle keygen`)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"{where}: not an Ed25519 public key")
    return key


def sign(private_path: Path, data: bytes) -> bytes:
    serialization = _serialization()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    except OSError as exc:
        raise BundleError(f"{private_path}: cannot read the signing key ({exc.strerror})") from None
    except (ValueError, TypeError):
        raise BundleError(f"{private_path}: not an unencrypted PEM private key "
                          "(make one with `globmed-edge bundle keygen`)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{private_path}: not an Ed25519 private key")
    return bytes(key.sign(data))


def check_signature(public_path: Path, data: bytes, signature: bytes, where: str) -> str:
    """Raise BundleError unless `signature` is the key's over `data`; returns the key's fingerprint."""
    from cryptography.exceptions import InvalidSignature

    try:
        pem = public_path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{public_path}: cannot read the public key ({exc.strerror})") from None
    key = _load_public(pem, str(public_path))
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise BundleError(f"{where}: the signature does not match {public_path.name}: the bundle was altered "
                          "after signing, or it was signed with another key") from None
    return fingerprint(pem)
