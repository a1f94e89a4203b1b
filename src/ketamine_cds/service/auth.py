"""Who may call the CDS Hooks endpoints: CDS Hooks 2.0 "Trusting CDS Clients" (signed JWT bearer tokens).

Every call to a CDS Service endpoint (``POST /cds-services/{id}``) and to its feedback endpoint must carry
``Authorization: Bearer <JWT>`` signed by an EHR (CDS Client) on the service's trust list. The discovery
endpoint (``GET /cds-services``) is not protected: CDS Hooks 2.0 requires the Bearer JWT only on "a request
to a CDS Service which requires authentication" (requirement 178) and asks services to require it where the
call "poses any risk of exposing sensitive data" (177); discovery returns only the public service catalogue,
so it answers with or without a token (a token sent there is not checked). CDS Hooks 1.0 and the 2020 ballot
asked for the JWT on every call including discovery; 2.0 made it conditional (FHIR-28694).

Trust list
----------
A JSON file (``KETAMINE_CDS_TRUST_LIST`` / ``--trust-list``), read once, at first use or at start-up when
the application calls :func:`configure`::

    {
      "issuers": [
        {"iss": "https://ehr.example", "jwks_url": "https://ehr.example/jwks.json"},
        {"iss": "https://other-ehr.example", "name": "Other EHR",
         "jwks": {"keys": [{"kty": "EC", "crv": "P-384", "kid": "k1", "x": "...", "y": "..."}]}}
      ]
    }

* ``iss`` (required, unique): the JWT ``iss`` value, compared exactly (a trailing slash matters).
* exactly one of ``jwks_url`` (the issuer's JWK Set URL; fetched whole within ``jwks_timeout_s``, 3 s by
  default, and at most :data:`JWKS_MAX_BYTES` long, cached for :data:`JWKS_TTL_S`, refetched once when a
  token names an unknown ``kid``) or ``jwks`` (the JWK Set itself, communicated out of band, requirement
  199). Inline keys must be public, asymmetric and carry a unique
  ``kid``.
* ``jku`` (optional): the JWK Set URLs the issuer's tokens may name in their ``jku`` header, the allowlist of
  requirement 195 ("an allowlist of iss and jku urls"); ``jwks_url`` is always allowed.
* ``name`` (optional): a label for the logs.

Any other field, a duplicate ``iss``, an empty list or a file that is not such JSON is a
:class:`TrustListError`, raised at start-up (or, if the application did not call :func:`configure`,
logged at first use, after which every call is refused).

Verification (requirement ids from the CDS Hooks 2.0 requirement list)
---------------------------------------------------------------------
* ``Authorization: Bearer <JWT>`` is required (176, 178).
* header: ``alg`` must be an asymmetric algorithm from :data:`ALLOWED_ALGORITHMS`; ``none`` (201) and
  HMAC/symmetric algorithms (203) are refused; ES384 and RS384 are the recommended ones (205), and the spec
  leaves other asymmetric algorithms to the service's risk tolerance (200, 206), so RS/PS/ES 256/384/512
  are accepted. ``kid`` is required (182) and selects the key (the JWK's own ``kty``/``crv``/``alg``/``use``
  must fit the header's ``alg``). ``typ``, when present, must be ``JWT`` (184). ``jku``, when present,
  must be the issuer's ``jwks_url`` or on its ``jku`` list (185, 195, 198); a ``jku`` outside them is refused
  and never fetched. For an issuer whose keys are inline, ``jku`` is a hint: the inline key with the token's
  ``kid`` is used and nothing is fetched (any ``jku`` is accepted as a hint when the issuer lists none; real
  clients such as the CDS Hooks sandbox always send one). Only when no inline key has the ``kid`` is the
  set at a listed ``jku`` fetched, as a ``jwks_url`` would be. Without ``jku`` the trust list's JWK Set is
  used (199). ``crit`` is refused (no extensions are understood).
* payload: ``iss`` must be on the trust list (187, 195); ``aud`` (string or array) must contain the URL of
  the endpoint being invoked, ``settings.base_url`` + the request path (189, 196) — the spec's example gives
  the discovery URL as the audience for discovery and ``.../cds-services/some-service`` for that service,
  so neither the base URL nor the discovery URL is accepted for a service call, and the feedback endpoint's
  audience is its own URL ``.../cds-services/{id}/feedback``; ``exp`` (190) and ``iat`` (191) are
  required, with :data:`LEEWAY_S` seconds of clock skew; ``exp``, ``iat`` and ``nbf`` must be JSON numbers
  (a numeric string, which PyJWT alone would accept, is refused), and ``exp`` - ``iat`` at most the
  service's ``max_token_lifetime_s`` (an hour by default: the ``jti`` is kept until ``exp``); ``jti`` is
  required and may be used once per issuer (192, remembered in the store until ``exp``); ``tenant`` is
  optional (193). CDS Hooks 2.0 does not define ``sub`` (1.0 did); it is not required, and must be a string
  when present (RFC 7519).

Every failure is a 401 with a precise, non-sensitive message and ``WWW-Authenticate: Bearer``; an
unreachable JWK Set URL is logged and refused the same way, never a 500. A database that cannot record the
``jti`` just now (stopped, restarting) is not the caller's fault: 503 with ``Retry-After``, never 401. The
verified claims are left in ``request.state.jwt_claims`` for the routes (e.g. ``tenant``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import jwt
from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from .logsafe import loggable
from .settings import Settings
from .store import RETRY_AFTER_S, Store, StoreUnavailable

log = logging.getLogger("ketamine_cds.service.auth")

ALLOWED_ALGORITHMS: frozenset[str] = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
LEEWAY_S = 30
JWKS_TIMEOUT_S = 3.0
JWKS_TTL_S = 300.0
JWKS_REFETCH_COOLDOWN_S = 2.0  # an unknown kid refetches a key set at most this often
JWKS_MAX_BYTES = 256 * 1024
MAX_TOKEN_CHARS = 16 * 1024
MAX_JTI_CHARS = 512
MAX_TOKEN_LIFETIME_S = 3600  # the default cap on 'exp' - 'iat' (Settings.max_token_lifetime_s)
_STATE_ATTR = "ketamine_cds_authenticator"
_PRIVATE_JWK_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


class TrustListError(ValueError):
    """The trust list file is missing, unreadable or malformed."""


class AuthError(Exception):
    """A refused call; the message goes to the caller, so it must not reveal secrets."""


@dataclass(frozen=True)
class TrustedIssuer:
    iss: str
    name: str
    jwks_url: str | None = None
    jwks: Mapping[str, Mapping[str, Any]] | None = None  # kid -> public JWK, when given inline
    jku: frozenset[str] = frozenset()  # the key set URLs a token's 'jku' may name (besides jwks_url)

    def allows_jku(self, jku: str) -> bool:
        """Whether a token may name this key set URL: the issuer's jwks_url or one on its jku list; any URL,
        as a hint that is never fetched, for an inline key set whose issuer lists none."""
        if jku == self.jwks_url or jku in self.jku:
            return True
        return self.jwks is not None and not self.jku


@dataclass(frozen=True)
class TrustList:
    issuers: Mapping[str, TrustedIssuer]


# --- the trust list ------------------------------------------------------------------------------------


def load_trust_list(path: Path) -> TrustList:
    """Read and check a trust list file; :class:`TrustListError` says exactly what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrustListError(f"trust list {path}: cannot read it ({exc})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrustListError(f"trust list {path}: not valid JSON ({exc})") from None
    try:
        return _parse_trust_list(document)
    except TrustListError as exc:
        raise TrustListError(f"trust list {path}: {exc}") from None


def _parse_trust_list(document: object) -> TrustList:
    if not isinstance(document, dict):
        raise TrustListError('expected a JSON object {"issuers": [...]}')
    unknown = set(document) - {"issuers"}
    if unknown:
        raise TrustListError(f"unknown top-level field(s) {sorted(unknown)}; expected only 'issuers'")
    entries = document.get("issuers")
    if not isinstance(entries, list) or not entries:
        raise TrustListError("'issuers' must be a non-empty array")
    issuers: dict[str, TrustedIssuer] = {}
    for index, entry in enumerate(entries):
        issuer = _parse_issuer(entry, f"issuers[{index}]")
        if issuer.iss in issuers:
            raise TrustListError(f"issuers[{index}]: iss {issuer.iss!r} is listed twice")
        issuers[issuer.iss] = issuer
    return TrustList(issuers)


def _parse_issuer(entry: object, where: str) -> TrustedIssuer:
    if not isinstance(entry, dict):
        raise TrustListError(f"{where}: expected an object")
    unknown = set(entry) - {"iss", "name", "jwks_url", "jwks", "jku"}
    if unknown:
        raise TrustListError(
            f"{where}: unknown field(s) {sorted(unknown)}; allowed: iss, name, jwks_url, jwks, jku"
        )
    iss = entry.get("iss")
    if not isinstance(iss, str) or not iss.strip():
        raise TrustListError(f"{where}: 'iss' must be a non-empty string")
    name = entry.get("name", iss)
    if not isinstance(name, str):
        raise TrustListError(f"{where}: 'name' must be a string")
    has_url, has_set = "jwks_url" in entry, "jwks" in entry
    if has_url == has_set:
        raise TrustListError(f"{where}: give exactly one of 'jwks_url' and 'jwks'")
    if has_url:
        url = _http_url(entry["jwks_url"])
        if url is None:
            raise TrustListError(f"{where}: 'jwks_url' must be an http(s) URL")
        if not url.startswith("https:"):
            log.warning("trust list %s: jwks_url %s is not https; acceptable only for testing", where, url)
        return TrustedIssuer(iss=iss, name=name, jwks_url=url, jku=_parse_jku(entry, where))
    jwks = _parse_inline_jwks(entry["jwks"], f"{where}.jwks")
    return TrustedIssuer(iss=iss, name=name, jwks=jwks, jku=_parse_jku(entry, where))


def _http_url(value: object) -> str | None:
    """The value when it is an absolute http(s) URL, else None."""
    try:
        parsed = httpx.URL(value) if isinstance(value, str) else None
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        return None
    return str(value)


def _parse_jku(entry: dict[str, Any], where: str) -> frozenset[str]:
    if "jku" not in entry:
        return frozenset()
    value = entry["jku"]
    if not isinstance(value, list) or not value:
        raise TrustListError(f"{where}: 'jku' must be a non-empty array of key set URLs")
    urls = []
    for index, item in enumerate(value):
        url = _http_url(item)
        if url is None:
            raise TrustListError(f"{where}.jku[{index}]: must be an http(s) URL")
        if not url.startswith("https:"):
            log.warning("trust list %s: jku %s is not https; acceptable only for testing", where, url)
        urls.append(url)
    return frozenset(urls)


def _parse_inline_jwks(value: object, where: str) -> dict[str, Mapping[str, Any]]:
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list) or not value["keys"]:
        raise TrustListError(f'{where}: expected a JWK Set {{"keys": [...]}} with at least one key')
    keys: dict[str, Mapping[str, Any]] = {}
    for index, key in enumerate(value["keys"]):
        here = f"{where}.keys[{index}]"
        if not isinstance(key, dict):
            raise TrustListError(f"{here}: expected a JWK object")
        kid = key.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TrustListError(f"{here}: 'kid' is required (CDS Hooks selects keys by kid)")
        if kid in keys:
            raise TrustListError(f"{here}: kid {kid!r} is not unique in the set")
        if key.get("kty") not in ("RSA", "EC"):
            raise TrustListError(f"{here}: 'kty' must be RSA or EC (symmetric keys are not allowed)")
        if any(member in key for member in _PRIVATE_JWK_MEMBERS):
            raise TrustListError(f"{here}: contains private key material; list only the public key")
        if "alg" in key and key["alg"] not in ALLOWED_ALGORITHMS:
            raise TrustListError(f"{here}: 'alg' must be one of {sorted(ALLOWED_ALGORITHMS)}")
        algorithm = key.get("alg") or ("RS384" if key["kty"] == "RSA" else _alg_for_curve(key.get("crv")))
        if algorithm is None:
            raise TrustListError(f"{here}: EC 'crv' must be P-256, P-384 or P-521")
        try:
            jwt.PyJWK(key, algorithm=algorithm)
        except jwt.PyJWTError as exc:
            raise TrustListError(f"{here}: not a usable public key ({exc})") from None
        keys[kid] = dict(key)
    return keys


def _alg_for_curve(crv: object) -> str | None:
    return next((alg for alg, curve in _EC_CURVES.items() if curve == crv), None)


# --- JWK Sets fetched from URLs ------------------------------------------------------------------------


@dataclass
class _KeySet:
    keys: dict[str, Mapping[str, Any] | None]  # kid -> JWK; None when the kid is ambiguous in the set
    fetched_at: float


@dataclass
class _KeySetCache:
    timeout_s: float = JWKS_TIMEOUT_S
    _sets: dict[str, _KeySet] = field(default_factory=dict)
    _failed_at: dict[str, float] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def key(self, url: str, kid: str) -> Mapping[str, Any] | None:
        """The key with this kid from the set at url: cached, refreshed when stale or when kid is unknown."""
        async with self._locks.setdefault(url, asyncio.Lock()):
            cached = self._sets.get(url)
            age = time.monotonic() - cached.fetched_at if cached else 0.0
            must_fetch = (
                cached is None
                or age > JWKS_TTL_S
                or (kid not in cached.keys and age >= JWKS_REFETCH_COOLDOWN_S)
            )
            failed_recently = time.monotonic() - self._failed_at.get(url, -1e9) < JWKS_REFETCH_COOLDOWN_S
            if must_fetch and failed_recently and cached is None:
                raise AuthError(_UNREACHABLE)  # do not queue every caller behind a dead key set URL
            if must_fetch and not failed_recently:
                try:
                    cached = await self._fetch(url)
                    self._sets[url] = cached
                except AuthError:
                    self._failed_at[url] = time.monotonic()
                    if cached is None:
                        raise
                    log.warning("using the key set from %s fetched %.0f s ago", url, age)
        assert cached is not None
        if kid in cached.keys and cached.keys[kid] is None:
            raise AuthError("the issuer's key set has several keys with the JWT's 'kid'")
        return cached.keys.get(kid)

    async def _fetch(self, url: str) -> _KeySet:
        """The key set at url, read whole within ``timeout_s`` (connecting, headers and every byte: a server
        that drips its answer is cut off) and at most ``JWKS_MAX_BYTES`` long."""
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await self._download(url)
            document = json.loads(bytes(body))
            if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
                raise _FetchError('not a JWK Set {"keys": [...]}')
        except TimeoutError:
            log.warning("cannot fetch the JWK Set %s: no whole answer within %g s", url, self.timeout_s)
            raise AuthError(_UNREACHABLE) from None
        except (httpx.HTTPError, _FetchError, ValueError) as exc:
            log.warning("cannot fetch the JWK Set %s: %s", url, exc or type(exc).__name__)
            raise AuthError(_UNREACHABLE) from None
        keys: dict[str, Mapping[str, Any] | None] = {}
        for key in document["keys"]:
            if not isinstance(key, dict) or not isinstance(key.get("kid"), str):
                continue
            if key.get("kty") not in ("RSA", "EC") or key.get("use", "sig") != "sig":
                continue  # symmetric keys are never trusted; encryption keys are not for signatures
            keys[key["kid"]] = None if key["kid"] in keys else key
        log.info("fetched the JWK Set %s: %d usable key(s)", url, len(keys))
        return _KeySet(keys, time.monotonic())

    async def _download(self, url: str) -> bytearray:
        async with (
            httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client,
            client.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise _FetchError(f"HTTP {response.status_code}")
            declared = response.headers.get("Content-Length", "").strip()
            if declared.isdigit() and int(declared) > JWKS_MAX_BYTES:
                raise _FetchError(f"declares {declared} bytes, more than {JWKS_MAX_BYTES}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > JWKS_MAX_BYTES:
                    raise _FetchError(f"larger than {JWKS_MAX_BYTES} bytes")
            return body


class _FetchError(Exception):
    """An issuer's JWKS could not be fetched or read."""


_UNREACHABLE = "the issuer's key set (JWKS) cannot be fetched; try again later"


# --- verification --------------------------------------------------------------------------------------


@dataclass
class Authenticator:
    """Verifies CDS Hooks JWTs against one trust list; one per application, kept in ``app.state``."""

    trust: TrustList
    store: Store
    jwks: _KeySetCache = field(default_factory=_KeySetCache)
    max_lifetime_s: float = MAX_TOKEN_LIFETIME_S

    async def verify(self, token: str, audience: str) -> dict[str, Any]:
        """The verified claims of token for a call to the endpoint URL audience; AuthError if refused."""
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError("the bearer token is too large")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthError("the bearer token is not a well-formed JWT") from None
        algorithm = _check_header(header)
        iss = unverified.get("iss")
        if not isinstance(iss, str) or not iss:
            raise AuthError("the JWT lacks the required claim 'iss'")
        issuer = self.trust.issuers.get(iss)
        if issuer is None:
            raise AuthError("the JWT issuer ('iss') is not on this service's trust list")
        _check_claim_types(unverified)
        jwk = await self._key(issuer, header, algorithm)
        claims = _decode(token, jwk, algorithm, iss, audience)
        if claims["exp"] - claims["iat"] > self.max_lifetime_s:
            raise AuthError(
                f"the JWT's lifetime ('exp' - 'iat') is longer than this service accepts "
                f"({self.max_lifetime_s:g} s)"
            )
        jti: str = claims["jti"]
        remember_until = dt.datetime.fromtimestamp(int(claims["exp"]) + LEEWAY_S, dt.UTC)
        if not await run_in_threadpool(self.store.remember_token, iss, jti, remember_until):
            raise AuthError("the JWT 'jti' has already been used (replayed token)")
        return claims

    async def _key(self, issuer: TrustedIssuer, header: Mapping[str, Any], algorithm: str) -> jwt.PyJWK:
        kid: str = header["kid"]
        jku = header.get("jku")
        if jku is not None and (not isinstance(jku, str) or not issuer.allows_jku(jku)):
            # refused before anything is fetched: a token never makes the service contact a URL of its choice
            raise AuthError("the JWT 'jku' is not a key set URL this service trusts for the issuer")
        jwk: Mapping[str, Any] | None
        if issuer.jwks is not None:
            jwk = issuer.jwks.get(kid)  # the pinned key: a jku beside it is only a hint, never fetched
            if jwk is None and jku is not None and jku in issuer.jku:
                jwk = await self.jwks.key(jku, kid)  # a listed key set URL, for a key not (yet) pinned
        else:
            assert issuer.jwks_url is not None
            jwk = await self.jwks.key(jku if jku is not None else issuer.jwks_url, kid)
        if jwk is None:
            raise AuthError("the issuer's key set has no key with the JWT's 'kid'")
        return _usable_key(jwk, algorithm)


def _check_header(header: Mapping[str, Any]) -> str:
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or not algorithm:
        raise AuthError("the JWT header lacks 'alg'")
    if algorithm.lower() == "none":
        raise AuthError("unsigned JWTs (alg 'none') are not accepted")
    if algorithm.upper().startswith("HS"):
        raise AuthError("symmetric (HMAC) JWT signatures are not accepted; sign with ES384 or RS384")
    if algorithm not in ALLOWED_ALGORITHMS:
        raise AuthError(
            f"the JWT algorithm is not accepted; use one of {', '.join(sorted(ALLOWED_ALGORITHMS))}"
        )
    if "typ" in header and (not isinstance(header["typ"], str) or header["typ"].upper() != "JWT"):
        raise AuthError("the JWT header 'typ' must be 'JWT'")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise AuthError("the JWT header lacks 'kid'")
    if "crit" in header or "b64" in header:
        raise AuthError("JWT header extensions ('crit') are not accepted")
    return algorithm


def _check_claim_types(claims: Mapping[str, Any]) -> None:
    jti = claims.get("jti")
    if "jti" in claims and (not isinstance(jti, str) or not jti):
        raise AuthError("the JWT 'jti' must be a non-empty string")
    if isinstance(jti, str) and len(jti) > MAX_JTI_CHARS:
        raise AuthError(f"the JWT 'jti' is longer than {MAX_JTI_CHARS} characters")
    for name in ("exp", "iat", "nbf"):  # RFC 7519 NumericDate: a JSON number, never a string
        if name in claims and not _numeric_date(claims[name]):
            raise AuthError(f"the JWT '{name}' must be a number (seconds since 1970-01-01T00:00:00Z)")
    for name in ("sub", "tenant"):  # 'sub' per RFC 7519; 'tenant' per CDS Hooks 2.0 (193)
        if name in claims and not isinstance(claims[name], str):
            raise AuthError(f"the JWT '{name}' must be a string")


def _numeric_date(value: object) -> bool:
    """A JSON number a clock can hold: not a string ("1700000000"), a boolean, infinity or NaN, nor an integer
    past any date (PyJWT itself would accept a numeric string)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) < _LATEST_DATE
    return isinstance(value, float) and math.isfinite(value) and abs(value) < _LATEST_DATE


_LATEST_DATE = 2**53  # seconds: far past year 9999, and exact as a float


def _usable_key(jwk: Mapping[str, Any], algorithm: str) -> jwt.PyJWK:
    family = "EC" if algorithm.startswith("ES") else "RSA"
    if (
        jwk.get("kty") != family
        or ("alg" in jwk and jwk["alg"] != algorithm)
        or (family == "EC" and jwk.get("crv") != _EC_CURVES[algorithm])
    ):
        raise AuthError("the JWT 'alg' does not match the issuer's key for this 'kid'")
    try:
        return jwt.PyJWK(dict(jwk), algorithm=algorithm)
    except jwt.PyJWTError:
        raise AuthError("the issuer's key for this 'kid' is not a usable public key") from None


def _decode(token: str, key: jwt.PyJWK, algorithm: str, iss: str, audience: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,  # the public key object: our own checks above bound it to this alg and kid
            algorithms=[algorithm],
            audience=[audience, audience + "/"],
            issuer=iss,
            leeway=LEEWAY_S,
            options={
                "require": ["iss", "aud", "exp", "iat", "jti"],
                "verify_signature": True,
                "verify_exp": True,
                "verify_iat": True,
                "verify_nbf": True,
                "verify_iss": True,
                "verify_aud": True,
                "verify_sub": True,
                "verify_jti": True,
                "enforce_minimum_key_length": True,
            },
        )
    except jwt.InvalidSignatureError:
        raise AuthError("the JWT signature does not verify with the issuer's key") from None
    except jwt.ExpiredSignatureError:
        raise AuthError("the JWT has expired ('exp')") from None
    except jwt.ImmatureSignatureError:
        raise AuthError("the JWT is not yet valid ('iat' or 'nbf' is in the future)") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(f"the JWT lacks the required claim '{exc.claim}'") from None
    except jwt.InvalidAudienceError:
        raise AuthError(
            f"the JWT audience ('aud') must be the URL of the endpoint called: {audience}"
        ) from None
    except jwt.InvalidIssuedAtError:
        raise AuthError("the JWT 'iat' must be a number") from None
    except jwt.InvalidKeyError:
        raise AuthError(
            "the issuer's key for this 'kid' is not acceptable (too short or malformed)"
        ) from None
    except jwt.InvalidAlgorithmError:
        raise AuthError("the JWT 'alg' does not match the issuer's key for this 'kid'") from None
    except jwt.PyJWTError:
        raise AuthError("the JWT is malformed or invalid") from None
    return claims


# --- the FastAPI dependency ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Refusing:
    """Stands in for an Authenticator when none can work: every call is refused with this reason."""

    reason: str


def configure(app: Any) -> None:
    """Load the trust list now (at start-up), so a malformed file stops the service with a clear error.

    Optional: :func:`authenticate` does the same at first use. Raises :class:`TrustListError`. Does nothing
    when the development flag disables authentication.
    """
    settings: Settings = app.state.settings
    if settings.allow_unauthenticated:
        return
    setattr(app.state, _STATE_ATTR, _build(settings, app.state.store, raise_errors=True))


def _build(settings: Settings, store: Store, *, raise_errors: bool) -> Authenticator | _Refusing:
    if settings.trust_list is None:
        log.error("no trust list is configured (KETAMINE_CDS_TRUST_LIST); every CDS Hooks call is refused")
        return _Refusing("this service has no trust list configured, so it refuses every call")
    try:
        trust = load_trust_list(settings.trust_list)
    except TrustListError as exc:
        if raise_errors:
            raise
        log.error("%s; every CDS Hooks call is refused", exc)
        return _Refusing(
            "this service's trust list is invalid (see the server log), so it refuses every call"
        )
    log.info(
        "trust list %s: %d issuer(s): %s",
        settings.trust_list,
        len(trust.issuers),
        ", ".join(i.name for i in trust.issuers.values()),
    )
    return Authenticator(
        trust,
        store,
        jwks=_KeySetCache(timeout_s=settings.jwks_timeout_s),
        max_lifetime_s=settings.max_token_lifetime_s,
    )


def _authenticator(request: Request) -> Authenticator | _Refusing:
    state = request.app.state
    current: Authenticator | _Refusing | None = getattr(state, _STATE_ATTR, None)
    if current is None:
        current = _build(state.settings, state.store, raise_errors=False)
        setattr(state, _STATE_ATTR, current)
    return current


def _refuse(message: str, *, token_given: bool) -> NoReturn:
    challenge = 'Bearer realm="ketamine-cds"' + (', error="invalid_token"' if token_given else "")
    raise HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": challenge})


def _bearer_token(request: Request) -> str:
    values: Sequence[str] = request.headers.getlist("authorization")
    if not values:
        _refuse("an Authorization header with a Bearer JWT from a trusted EHR is required", token_given=False)
    if len(values) > 1:
        _refuse("send exactly one Authorization header", token_given=True)
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        _refuse("the Authorization header must be 'Bearer <JWT>'", token_given=True)
    return token.strip()


async def authenticate(request: Request) -> str | None:
    """The calling EHR's issuer (``iss``); None when authentication is disabled for development."""
    settings: Settings = request.app.state.settings
    if settings.allow_unauthenticated:
        return None  # announced at start-up and on every response by app.py
    authenticator = _authenticator(request)
    if isinstance(authenticator, _Refusing):
        _refuse(authenticator.reason, token_given="authorization" in request.headers)
    token = _bearer_token(request)
    audience = settings.base_url + request.url.path.rstrip("/")
    try:
        claims = await authenticator.verify(token, audience)
    except AuthError as exc:
        log.warning("refused %s %s: %s", request.method, loggable(request.url.path), loggable(exc, 400))
        _refuse(str(exc), token_given=True)
    except StoreUnavailable as exc:
        # the token may well be good: its id could not be recorded (replay check), which is not the caller's
        # fault, so the answer is "try again", never 401
        log.error("a call could not be authenticated: %s", exc)
        raise HTTPException(
            status_code=503,
            detail="the service's database is unavailable; try again",
            headers={"Retry-After": RETRY_AFTER_S},
        ) from None
    except Exception:
        log.exception("error while verifying a JWT for %s %s", request.method, loggable(request.url.path))
        _refuse("the bearer token could not be verified", token_given=True)
    request.state.jwt_claims = claims
    issuer: str = claims["iss"]
    return issuer
