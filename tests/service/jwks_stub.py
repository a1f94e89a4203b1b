"""Test helpers for CDS Hooks JWT authentication: signing keys, tokens, and a JWK Set server in a thread."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


@dataclass(frozen=True)
class SigningKey:
    """An EHR's key pair: signs tokens, publishes its public JWK."""

    kid: str
    alg: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    @classmethod
    def rsa(cls, kid: str, alg: str = "RS384", bits: int = 2048) -> SigningKey:
        return cls(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @classmethod
    def ec(cls, kid: str, alg: str = "ES384") -> SigningKey:
        curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}[alg]
        return cls(kid, alg, ec.generate_private_key(curve))

    def public_jwk(self, *, with_alg: bool = True) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(public))
        else:
            jwk = json.loads(ECAlgorithm.to_jwk(public))
        jwk.update({"kid": self.kid, "use": "sig"})
        if with_alg:
            jwk["alg"] = self.alg
        return jwk

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(
        self, claims: dict[str, Any], *, alg: str | None = None, kid: str | None = None, **headers: Any
    ) -> str:
        header: dict[str, Any] = {"typ": "JWT", "kid": self.kid if kid is None else kid, **headers}
        return jwt.encode(claims, self.private, algorithm=alg or self.alg, headers=header)


def claims(iss: str, aud: str | list[str], /, **changes: Any) -> dict[str, Any]:
    """A valid CDS Hooks JWT payload; a change to None removes that claim."""
    now = int(time.time())
    payload: dict[str, Any] = {"iss": iss, "aud": aud, "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex}
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None = None) -> str:
    """A JWT built by hand: HS256 over the given secret, or unsigned when secret is None."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = b"" if secret is None else hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@dataclass
class JwksStub:
    """JWK Sets served at http://127.0.0.1:{port}{path}; sets, delays and hit counts may change as it runs."""

    sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.hits[self.path] += 1
                time.sleep(stub.delays.get(self.path, 0.0))
                document = stub.sets.get(self.path)
                body = json.dumps(document).encode() if document is not None else b'{"error": "not found"}'
                try:
                    self.send_response(200 if document is not None else 404)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the caller gave up (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> JwksStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def publish(self, path: str, *keys: dict[str, Any]) -> str:
        self.sets[path] = {"keys": list(keys)}
        return self.url(path)
