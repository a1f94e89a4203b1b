"""A local test key, its trust list and the JWTs it signs: for trying the service as a CDS Client would
(``ketamine-cds test-token``, README "Quick start for EHR integrators").

The key is an EC P-384 key (ES384, the algorithm CDS Hooks 2.0 recommends) kept unencrypted in a folder of
the user's choosing, made there on first use with ``trust-list.json``, a trust list (``serve --trust-list``)
that trusts it for one issuer. A token it signs carries what the service checks (``auth.py``): ``iss``,
``aud`` (the endpoint called), ``exp``, ``iat``, a fresh ``jti``, and ``kid`` in its header. Anyone who can
read the folder can sign as that issuer: it is for a test service, never for one next to real patients.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .._errors import InputError

KEY_FILE = "test-key.pem"
TRUST_LIST_FILE = "trust-list.json"


def sign_test_token(folder: Path, *, iss: str, aud: str, minutes: int = 5) -> tuple[str, Path]:
    """A signed JWT for ``aud`` from ``iss``, and the trust list (rewritten for ``iss``) that trusts it."""
    if not aud.startswith(("http://", "https://")):
        raise InputError("--aud", f"the audience is the URL of the endpoint called, not {aud!r}")
    key = _key(folder)
    jwk = _public_jwk(key)
    trust_list = folder / TRUST_LIST_FILE
    document = {
        "issuers": [{"iss": iss, "name": "local test key (ketamine-cds test-token)", "jwks": {"keys": [jwk]}}]
    }
    trust_list.write_text(json.dumps(document, indent=2) + "\n")
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": iss,
        "aud": aud,
        "iat": now,
        "exp": now + 60 * minutes,
        "jti": str(uuid.uuid4()),
    }
    token = jwt.encode(claims, key, algorithm="ES384", headers={"kid": jwk["kid"], "typ": "JWT"})
    return token, trust_list


def _key(folder: Path) -> ec.EllipticCurvePrivateKey:
    """The folder's test key, made on first use (readable by its owner only)."""
    path = folder / KEY_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            made = ec.generate_private_key(ec.SECP384R1())
            pem = made.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise InputError("--keys", f"cannot use the folder {str(folder)!r}: {exc.strerror}") from None
    except ValueError:
        raise InputError("--keys", f"{path} is not a PEM private key") from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp384r1":
        raise InputError("--keys", f"{path} is not an EC P-384 key")
    return loaded


def _b64(number: int) -> str:
    raw = number.to_bytes(48, "big")  # P-384 coordinates are 48 bytes
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """The public key as a JWK, its ``kid`` the RFC 7638 thumbprint."""
    numbers = key.public_key().public_numbers()
    members = {"crv": "P-384", "kty": "EC", "x": _b64(numbers.x), "y": _b64(numbers.y)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    return {**members, "use": "sig", "alg": "ES384", "kid": kid}
