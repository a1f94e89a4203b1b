"""CDS Hooks 2.0 JWT authentication ("Trusting CDS Clients") against a real server and a real JWK Set server.

Requirement ids are from the CDS Hooks 2.0 requirement list (cds-hooks_2.0_requirements.csv).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Server
from jwks_stub import JwksStub, SigningKey, claims, raw_token

from ketamine_cds.service.auth import TrustListError, load_trust_list

EHR = "https://ehr.example"
INLINE = "https://inline.example"
DOWN = "https://down.example"
SLOW = "https://slow.example"
ROTATING = "https://rotating.example"
PINNED = "https://pinned.example"  # inline keys and a jku allowlist, as the CDS Hooks sandbox is trusted
WARNING_HEADER = "X-Ketamine-CDS-Warning"
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the weak-key case


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port  # nothing listens there once the socket is closed


@dataclass
class Secured:
    """A server with a trust list, the EHR keys it trusts, and the JWK Set server."""

    server: Server
    stub: JwksStub
    rsa: SigningKey  # RS384, 2048 bits, published at /ehr/jwks.json without an 'alg' member
    ec: SigningKey  # ES384, published at /ehr/jwks.json
    weak: SigningKey  # RS384, 1024 bits, published at /ehr/jwks.json
    inline: SigningKey  # ES384, given inline in the trust list
    pinned: SigningKey  # ES384, inline for PINNED, whose tokens may name /pinned/jwks.json as jku
    listed_only: SigningKey  # ES384, published only at /pinned/jwks.json (a PINNED key not yet inline)
    attacker: SigningKey  # RS384 with the same kid as rsa, never published
    rotating: list[SigningKey]
    jwks_url: str
    service_id: str
    hook: str

    @property
    def path(self) -> str:
        return f"/cds-services/{self.service_id}"

    @property
    def aud(self) -> str:
        return self.server.url + self.path

    def call(self, token: str | None = None, *, path: str | None = None, **headers: str) -> httpx.Response:
        """A valid call of the service (no ketamine order: no cards), or of its feedback endpoint."""
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        path = path or self.path
        body = _feedback() if path.endswith("/feedback") else _hook_request(self.hook)
        return httpx.post(self.server.url + path, json=body, headers=headers, timeout=30)


def _hook_request(hook: str) -> dict[str, Any]:
    context: dict[str, Any] = {
        "patientId": "example",
        "userId": "Practitioner/example",
        "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": []},
    }
    if hook == "order-select":
        context["selections"] = []
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}


def _feedback() -> dict[str, Any]:
    return {"feedback": [{"card": str(uuid.uuid4()), "outcome": "accepted"}]}


def _sign_service(server: Server) -> dict[str, Any]:
    """The order-sign service from discovery (the first service if there is none)."""
    services: list[dict[str, Any]] = httpx.get(server.url + "/cds-services", timeout=10).json()["services"]
    return next((s for s in services if s["hook"] == "order-sign"), services[0])


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    data_dir = tmp_path_factory.mktemp("auth")
    rsa_key, ec_key = SigningKey.rsa("rsa-1"), SigningKey.ec("ec-1")
    weak, inline = SigningKey.rsa("rsa-weak", bits=1024), SigningKey.ec("inline-1")
    rotating = [SigningKey.rsa("rot-1")]
    stub = JwksStub().start()
    jwks_url = stub.publish(
        "/ehr/jwks.json", rsa_key.public_jwk(with_alg=False), ec_key.public_jwk(), weak.public_jwk()
    )
    stub.publish("/evil/jwks.json", rsa_key.public_jwk(), ec_key.public_jwk())
    slow_url = stub.publish("/slow/jwks.json", rsa_key.public_jwk())
    stub.delays["/slow/jwks.json"] = 8.0
    rotating_url = stub.publish("/rotating/jwks.json", rotating[0].public_jwk())
    pinned, listed_only = SigningKey.ec("pinned-1"), SigningKey.ec("pinned-2")
    pinned_url = stub.publish("/pinned/jwks.json", pinned.public_jwk(), listed_only.public_jwk())
    trust_list = data_dir / "trust.json"
    trust_list.write_text(
        json.dumps(
            {
                "issuers": [
                    {"iss": EHR, "name": "Test EHR", "jwks_url": jwks_url},
                    {"iss": INLINE, "jwks": {"keys": [inline.public_jwk()]}},
                    {"iss": DOWN, "jwks_url": f"http://127.0.0.1:{_closed_port()}/jwks.json"},
                    {"iss": SLOW, "jwks_url": slow_url},
                    {"iss": ROTATING, "jwks_url": rotating_url},
                    {"iss": PINNED, "jwks": {"keys": [pinned.public_jwk()]}, "jku": [pinned_url]},
                ]
            }
        )
    )
    server = Server(data_dir)
    server.env = {"KETAMINE_CDS_TRUST_LIST": str(trust_list), "KETAMINE_CDS_PUBLIC_URL": server.url}
    server.start()
    try:
        service = _sign_service(server)
        yield Secured(
            server,
            stub,
            rsa_key,
            ec_key,
            weak,
            inline,
            pinned,
            listed_only,
            SigningKey.rsa("rsa-1"),
            rotating,
            jwks_url,
            service["id"],
            service["hook"],
        )
    finally:
        server.stop()
        stub.stop()


def assert_passes(response: httpx.Response) -> None:
    """The call got past authentication and was answered by the route itself."""
    assert response.status_code == 200, response.text
    assert WARNING_HEADER not in response.headers


def assert_refused(response: httpx.Response, fragment: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    error = response.json()["error"]
    assert any(f in error for f in fragment.split(" | ")), error


# --- accepted ------------------------------------------------------------------------------------------


def test_discovery_needs_no_token(secured: Secured) -> None:
    """Requirements 177/178: only calls that need authentication carry the JWT; discovery is public."""
    response = httpx.get(secured.server.url + "/cds-services", timeout=10)
    assert response.status_code == 200
    assert response.json()["services"]


def test_rs384_token_for_the_called_endpoint_is_accepted(secured: Secured) -> None:
    assert_passes(secured.call(secured.rsa.sign(claims(EHR, secured.aud))))


def test_es384_token_is_accepted(secured: Secured) -> None:
    assert_passes(secured.call(secured.ec.sign(claims(EHR, secured.aud))))


def test_rs256_is_accepted_because_the_spec_allows_any_asymmetric_algorithm(secured: Secured) -> None:
    assert_passes(secured.call(secured.rsa.sign(claims(EHR, secured.aud), alg="RS256")))


def test_inline_key_set_without_jku(secured: Secured) -> None:
    """Requirement 199: without jku, the JWK Set agreed out of band (here: in the trust list) is used."""
    assert_passes(secured.call(secured.inline.sign(claims(INLINE, secured.aud))))


def test_jku_equal_to_the_trusted_url_is_accepted(secured: Secured) -> None:
    assert_passes(secured.call(secured.rsa.sign(claims(EHR, secured.aud), jku=secured.jwks_url)))


def test_jku_beside_an_inline_key_set_is_a_hint_and_never_fetched(secured: Secured) -> None:
    """Real clients always send jku (the CDS Hooks sandbox does): with the key pinned inline, the token's jku
    is not fetched. Without a jku list for the issuer any jku is such a hint."""
    evil = "/evil/jwks.json"
    before = secured.stub.hits[evil]
    assert_passes(secured.call(secured.inline.sign(claims(INLINE, secured.aud), jku=secured.stub.url(evil))))
    assert secured.stub.hits[evil] == before


def test_a_listed_jku_beside_the_pinned_key_is_not_fetched(secured: Secured) -> None:
    """Requirement 195 (an allowlist of iss and jku urls): the jku is on the issuer's list, the kid inline."""
    before = secured.stub.hits["/pinned/jwks.json"]
    token = secured.pinned.sign(claims(PINNED, secured.aud), jku=secured.stub.url("/pinned/jwks.json"))
    assert_passes(secured.call(token))
    assert secured.stub.hits["/pinned/jwks.json"] == before


def test_a_jku_outside_the_issuers_list_is_refused_and_never_fetched(secured: Secured) -> None:
    evil = "/evil/jwks.json"
    before = secured.stub.hits[evil]
    for key in (secured.pinned, secured.listed_only):
        token = key.sign(claims(PINNED, secured.aud), jku=secured.stub.url(evil))
        assert_refused(secured.call(token), "'jku'")
    assert secured.stub.hits[evil] == before


def test_a_key_not_yet_inline_is_fetched_from_a_listed_jku_only(secured: Secured) -> None:
    url = secured.stub.url("/pinned/jwks.json")
    assert_refused(secured.call(secured.listed_only.sign(claims(PINNED, secured.aud))), "no key")
    assert_passes(secured.call(secured.listed_only.sign(claims(PINNED, secured.aud), jku=url)))


def test_aud_may_be_an_array_containing_the_endpoint(secured: Secured) -> None:
    """Requirement 189: aud is a string or an array of strings."""
    aud = ["https://elsewhere.example/cds-services/x", secured.aud]
    assert_passes(secured.call(secured.ec.sign(claims(EHR, aud))))


def test_tenant_and_sub_are_allowed(secured: Secured) -> None:
    token = secured.ec.sign(claims(EHR, secured.aud, tenant="2ddd6c3a", sub="client_id"))
    assert_passes(secured.call(token))


def test_numeric_dates_may_have_a_fraction(secured: Secured) -> None:
    now = time.time()  # RFC 7519 NumericDate: a JSON number, not necessarily an integer
    assert_passes(secured.call(secured.rsa.sign(claims(EHR, secured.aud, iat=now, exp=now + 300.5))))


def test_small_clock_skew_is_tolerated(secured: Secured) -> None:
    now = int(time.time())
    assert_passes(secured.call(secured.rsa.sign(claims(EHR, secured.aud, iat=now - 305, exp=now - 5))))


def test_feedback_endpoint_needs_a_token_for_its_own_url(secured: Secured) -> None:
    """Requirement 196: aud is the URL of the endpoint being invoked, so feedback has its own audience."""
    path = secured.path + "/feedback"
    assert_refused(secured.call(path=path), "Authorization header")
    assert_refused(secured.call(secured.rsa.sign(claims(EHR, secured.aud)), path=path), "audience")
    assert_passes(secured.call(secured.rsa.sign(claims(EHR, secured.server.url + path)), path=path))


def test_feedback_is_authenticated_before_its_body_is_read(secured: Secured) -> None:
    """401 first, as on the hook route: an unauthenticated caller learns nothing about the body."""
    url = secured.server.url + secured.path + "/feedback"
    response = httpx.post(url, content=b"[1.5, 2.5", headers={"Content-Type": "application/json"}, timeout=30)
    assert_refused(response, "Authorization header")


# --- refused -------------------------------------------------------------------------------------------

TokenMaker = Callable[[Secured], str]


def _other_service(s: Secured) -> str:
    return s.rsa.sign(claims(EHR, s.server.url + "/cds-services/some-other-service"))


def _localhost(s: Secured) -> str:
    return s.rsa.sign(claims(EHR, s.aud.replace("127.0.0.1", "localhost")))


REFUSED: dict[str, tuple[TokenMaker, str]] = {
    "bad signature (another key, same kid)": (lambda s: s.attacker.sign(claims(EHR, s.aud)), "signature"),
    "alg none (201)": (
        lambda s: raw_token({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, claims(EHR, s.aud)),
        "alg 'none'",
    ),
    "HS256 keyed with the public key bytes (203)": (
        lambda s: raw_token(
            {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims(EHR, s.aud), s.rsa.public_pem()
        ),
        "HMAC",
    ),
    "alg that does not fit the kid's key": (lambda s: s.ec.sign(claims(EHR, s.aud), kid="rsa-1"), "'alg'"),
    "ES256 header on a P-384 key": (
        lambda s: SigningKey.ec("ec-1", "ES256").sign(claims(EHR, s.aud)),
        "'alg'",
    ),
    "RSA key shorter than 2048 bits": (lambda s: s.weak.sign(claims(EHR, s.aud)), "not acceptable"),
    "wrong audience: the discovery URL": (
        lambda s: s.rsa.sign(claims(EHR, s.server.url + "/cds-services")),
        "audience",
    ),
    "wrong audience: the base URL": (lambda s: s.rsa.sign(claims(EHR, s.server.url)), "audience"),
    "wrong audience: another service": (_other_service, "audience"),
    "wrong audience: another host name": (_localhost, "audience"),
    "missing aud": (lambda s: s.rsa.sign(claims(EHR, s.aud, aud=None)), "'aud'"),
    "expired": (
        lambda s: s.rsa.sign(claims(EHR, s.aud, iat=int(time.time()) - 600, exp=int(time.time()) - 120)),
        "expired",
    ),
    "missing exp (190)": (lambda s: s.rsa.sign(claims(EHR, s.aud, exp=None)), "'exp'"),
    "missing iat (191)": (lambda s: s.rsa.sign(claims(EHR, s.aud, iat=None)), "'iat'"),
    "iat in the future": (lambda s: s.rsa.sign(claims(EHR, s.aud, iat=int(time.time()) + 3600)), "future"),
    "exp as a numeric string": (
        lambda s: s.rsa.sign(claims(EHR, s.aud, exp=str(int(time.time()) + 300))),
        "'exp' must be a number",
    ),
    "iat as a numeric string": (
        lambda s: s.rsa.sign(claims(EHR, s.aud, iat=str(int(time.time())))),
        "'iat' must be a number",
    ),
    "nbf as a numeric string": (
        lambda s: s.rsa.sign(claims(EHR, s.aud, nbf=str(int(time.time()) - 10))),
        "'nbf' must be a number",
    ),
    "exp as true": (lambda s: s.rsa.sign(claims(EHR, s.aud, exp=True)), "'exp' must be a number"),
    "exp that is not finite": (
        lambda s: s.rsa.sign(claims(EHR, s.aud, exp=float("inf"))),
        "'exp' must be a number",
    ),
    "a lifetime over the service's cap (an hour by default)": (
        lambda s: s.rsa.sign(claims(EHR, s.aud, exp=int(time.time()) + 3600 + 120)),
        "lifetime",
    ),
    "missing jti (192)": (lambda s: s.rsa.sign(claims(EHR, s.aud, jti=None)), "'jti'"),
    "numeric jti": (lambda s: s.rsa.sign(claims(EHR, s.aud, jti=12345)), "'jti'"),
    "unknown issuer": (lambda s: s.rsa.sign(claims("https://intruder.example", s.aud)), "trust list"),
    "issuer differing by a trailing slash": (lambda s: s.rsa.sign(claims(EHR + "/", s.aud)), "trust list"),
    "missing iss (187)": (lambda s: s.rsa.sign(claims(EHR, s.aud, iss=None)), "'iss'"),
    "jku not in the trust list (195)": (
        lambda s: s.rsa.sign(claims(EHR, s.aud), jku=s.stub.url("/evil/jwks.json")),
        "'jku'",
    ),
    "jku outside the list of an issuer with an inline key set (195)": (
        lambda s: s.pinned.sign(claims(PINNED, s.aud), jku=s.stub.url("/evil/jwks.json")),
        "'jku'",
    ),
    "missing kid (182)": (lambda s: s.rsa.sign(claims(EHR, s.aud), kid=""), "'kid'"),
    "unknown kid": (lambda s: s.rsa.sign(claims(EHR, s.aud), kid="no-such-key"), "no key"),
    "typ other than JWT (184)": (lambda s: s.rsa.sign(claims(EHR, s.aud), typ="at+jwt"), "'typ'"),
    "crit header": (lambda s: s.rsa.sign(claims(EHR, s.aud), crit=["exp"]), "crit | well-formed"),
    "garbage token": (lambda s: "garbage", "well-formed"),
    "garbage with dots": (lambda s: "a.b.c", "well-formed"),
    "JWKS server down": (lambda s: s.rsa.sign(claims(DOWN, s.aud)), "cannot be fetched"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused(secured: Secured, case: str) -> None:
    make, fragment = REFUSED[case]
    assert_refused(secured.call(make(secured)), fragment)


def test_missing_authorization_header(secured: Secured) -> None:
    response = secured.call()
    assert_refused(response, "Authorization header")
    assert "error=" not in response.headers["WWW-Authenticate"]  # RFC 6750: no error code without a token


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Bearer", "eyJhbGciOi"])
def test_authorization_header_that_is_not_a_bearer_token(secured: Secured, value: str) -> None:
    assert_refused(secured.call(Authorization=value), "Bearer")


def test_replayed_jti_is_refused(secured: Secured) -> None:
    token = secured.rsa.sign(claims(EHR, secured.aud))
    assert_passes(secured.call(token))
    assert_refused(secured.call(token), "already been used")


def test_same_jti_in_a_new_token_is_refused(secured: Secured) -> None:
    jti = uuid.uuid4().hex
    assert_passes(secured.call(secured.rsa.sign(claims(EHR, secured.aud, jti=jti))))
    assert_refused(secured.call(secured.ec.sign(claims(EHR, secured.aud, jti=jti))), "already been used")


def test_concurrent_replays_let_exactly_one_through(secured: Secured) -> None:
    token = secured.ec.sign(claims(EHR, secured.aud))
    statuses: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        status = secured.call(token).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(statuses) == 8
    assert sorted(statuses) == [200] + [401] * 7, statuses


def test_jwks_down_is_logged_and_never_a_500(secured: Secured) -> None:
    for _ in range(3):
        assert_refused(secured.call(secured.ec.sign(claims(DOWN, secured.aud))), "cannot be fetched")
    assert "cannot fetch the JWK Set" in secured.server.log_text()


def test_slow_jwks_server_times_out_quickly(secured: Secured) -> None:
    started = time.monotonic()
    assert_refused(secured.call(secured.rsa.sign(claims(SLOW, secured.aud))), "cannot be fetched")
    assert time.monotonic() - started < 6.0


def test_key_sets_are_cached_and_refetched_once_for_a_new_kid(secured: Secured) -> None:
    stub, path = secured.stub, "/rotating/jwks.json"
    assert_passes(secured.call(secured.rotating[0].sign(claims(ROTATING, secured.aud))))
    assert_passes(secured.call(secured.rotating[0].sign(claims(ROTATING, secured.aud))))
    assert stub.hits[path] == 1  # cached
    new_key = SigningKey.ec("rot-2")
    stub.publish(path, secured.rotating[0].public_jwk(), new_key.public_jwk())
    time.sleep(2.2)  # the refetch cool-down (JWKS_REFETCH_COOLDOWN_S)
    assert_passes(secured.call(new_key.sign(claims(ROTATING, secured.aud))))
    assert stub.hits[path] == 2  # refetched once for the unknown kid
    for _ in range(5):  # a burst of unknown kids does not hammer the EHR's key set URL
        assert_refused(
            secured.call(new_key.sign(claims(ROTATING, secured.aud), kid=uuid.uuid4().hex)), "no key"
        )
    assert stub.hits[path] == 2


# --- development flag, and no trust list ---------------------------------------------------------------


def test_dev_flag_accepts_calls_without_a_token_and_says_so(dev_server: Server) -> None:
    service = _sign_service(dev_server)
    url = f"{dev_server.url}/cds-services/{service['id']}"
    for response in (
        httpx.post(url, json=_hook_request(service["hook"]), timeout=30),
        httpx.post(url + "/feedback", json=_feedback(), timeout=30),
    ):
        assert response.status_code == 200, response.text
        assert "AUTHENTICATION DISABLED" in response.headers[WARNING_HEADER]


def test_without_trust_list_or_dev_flag_every_call_is_refused(tmp_path: Path) -> None:
    server = Server(tmp_path).start()
    try:
        assert httpx.get(server.url + "/cds-services", timeout=10).status_code == 200
        service = _sign_service(server)
        url = f"{server.url}/cds-services/{service['id']}"
        for headers in ({}, {"Authorization": "Bearer a.b.c"}):
            response = httpx.post(url, json=_hook_request(service["hook"]), headers=headers, timeout=30)
            assert_refused(response, "no trust list")
            assert WARNING_HEADER not in response.headers
            response = httpx.post(url + "/feedback", json=_feedback(), headers=headers, timeout=30)
            assert_refused(response, "no trust list")
    finally:
        server.stop()


def test_malformed_trust_list_refuses_every_call_with_a_clear_log(tmp_path: Path) -> None:
    trust_list = tmp_path / "trust.json"
    trust_list.write_text(json.dumps({"issuers": [{"iss": EHR, "jwks_uri": "https://ehr.example/jwks"}]}))
    server = Server(tmp_path, {"KETAMINE_CDS_TRUST_LIST": str(trust_list)})
    try:
        server.start()
    except RuntimeError as exc:  # the application validates the trust list at start-up
        assert "jwks_uri" in str(exc)
        return
    try:
        service = _sign_service(server)
        url = f"{server.url}/cds-services/{service['id']}"
        response = httpx.post(url, json=_hook_request(service["hook"]), timeout=30)
        assert_refused(response, "trust list is invalid")
        assert "unknown field(s) ['jwks_uri']" in server.log_text()
    finally:
        server.stop()


# --- the trust list file -------------------------------------------------------------------------------

GOOD_EC = SigningKey.ec("k1").public_jwk()

MALFORMED: dict[str, tuple[object, str]] = {
    "not an object": ([], "expected a JSON object"),
    "no issuers": ({"issuers": []}, "non-empty array"),
    "unknown top-level field": ({"issuers": [], "extra": 1}, "unknown top-level"),
    "issuer not an object": ({"issuers": ["https://ehr.example"]}, "expected an object"),
    "missing iss": ({"issuers": [{"jwks_url": "https://e/j"}]}, "'iss'"),
    "typo jwks_uri": (
        {"issuers": [{"iss": EHR, "jwks_uri": "https://e/j"}]},
        "unknown field(s) ['jwks_uri']",
    ),
    "neither url nor keys": ({"issuers": [{"iss": EHR}]}, "exactly one"),
    "both url and keys": (
        {"issuers": [{"iss": EHR, "jwks_url": "https://e/j", "jwks": {"keys": [GOOD_EC]}}]},
        "exactly one",
    ),
    "url not http": ({"issuers": [{"iss": EHR, "jwks_url": "file:///etc/passwd"}]}, "http(s) URL"),
    "jku not a list": (
        {"issuers": [{"iss": EHR, "jwks_url": "https://e/j", "jku": "https://e/j"}]},
        "'jku' must be a non-empty array",
    ),
    "jku not a URL": (
        {"issuers": [{"iss": EHR, "jwks": {"keys": [GOOD_EC]}, "jku": ["file:///etc/passwd"]}]},
        "jku[0]: must be an http(s) URL",
    ),
    "duplicate iss": ({"issuers": [{"iss": EHR, "jwks_url": "https://e/j"}] * 2}, "listed twice"),
    "empty key set": ({"issuers": [{"iss": EHR, "jwks": {"keys": []}}]}, "at least one key"),
    "key without kid": ({"issuers": [{"iss": EHR, "jwks": {"keys": [{**GOOD_EC, "kid": ""}]}}]}, "'kid'"),
    "duplicate kid": ({"issuers": [{"iss": EHR, "jwks": {"keys": [GOOD_EC, GOOD_EC]}}]}, "not unique"),
    "symmetric key": (
        {"issuers": [{"iss": EHR, "jwks": {"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}}]},
        "symmetric",
    ),
    "private key": ({"issuers": [{"iss": EHR, "jwks": {"keys": [{**GOOD_EC, "d": "AAAA"}]}}]}, "private key"),
    "HMAC alg": ({"issuers": [{"iss": EHR, "jwks": {"keys": [{**GOOD_EC, "alg": "HS256"}]}}]}, "'alg'"),
    "broken key": (
        {"issuers": [{"iss": EHR, "jwks": {"keys": [{**GOOD_EC, "x": "AAAA"}]}}]},
        "usable public key",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_trust_list_is_a_clear_error(tmp_path: Path, case: str) -> None:
    document, fragment = MALFORMED[case]
    path = tmp_path / "trust.json"
    path.write_text(json.dumps(document))
    with pytest.raises(TrustListError, match=r"trust list .*trust\.json") as raised:
        load_trust_list(path)
    assert fragment in str(raised.value)


def test_trust_list_that_is_not_json_or_missing(tmp_path: Path) -> None:
    path = tmp_path / "trust.json"
    path.write_text("{not json")
    with pytest.raises(TrustListError, match="not valid JSON"):
        load_trust_list(path)
    with pytest.raises(TrustListError, match="cannot read"):
        load_trust_list(tmp_path / "missing.json")


def test_good_trust_list_loads(tmp_path: Path) -> None:
    path = tmp_path / "trust.json"
    path.write_text(
        json.dumps(
            {
                "issuers": [
                    {"iss": EHR, "name": "EHR", "jwks_url": "https://ehr.example/jwks.json"},
                    {"iss": INLINE, "jwks": {"keys": [GOOD_EC, SigningKey.rsa("r1").public_jwk()]}},
                    {"iss": PINNED, "jwks": {"keys": [GOOD_EC]}, "jku": ["https://pinned.example/jwks"]},
                ]
            }
        )
    )
    trust = load_trust_list(path)
    assert set(trust.issuers) == {EHR, INLINE, PINNED}
    assert trust.issuers[PINNED].jku == {"https://pinned.example/jwks"}
    assert trust.issuers[EHR].jwks_url == "https://ehr.example/jwks.json"
    inline = trust.issuers[INLINE].jwks
    assert inline is not None
    assert set(inline) == {"k1", "r1"}


def test_the_longest_token_lifetime_accepted_is_a_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from ketamine_cds.service.auth import Authenticator, AuthError, _parse_trust_list
    from ketamine_cds.service.settings import Settings
    from ketamine_cds.service.store import open_store

    monkeypatch.setenv("KETAMINE_CDS_MAX_TOKEN_LIFETIME_S", "60")
    settings = Settings.from_env(data_dir=tmp_path)
    assert settings.max_token_lifetime_s == 60
    key = SigningKey.ec("k1")
    store = open_store(settings)
    try:
        trust = _parse_trust_list({"issuers": [{"iss": INLINE, "jwks": {"keys": [key.public_jwk()]}}]})
        authenticator = Authenticator(trust, store, max_lifetime_s=settings.max_token_lifetime_s)
        aud = "https://cds.example/cds-services/x"
        now = int(time.time())
        assert asyncio.run(authenticator.verify(key.sign(claims(INLINE, aud, exp=now + 60)), aud))
        with pytest.raises(AuthError, match="lifetime"):
            asyncio.run(authenticator.verify(key.sign(claims(INLINE, aud, exp=now + 61)), aud))
    finally:
        store.close()


def test_a_refused_call_whose_path_holds_a_line_break_forges_no_log_line(secured: Secured) -> None:
    # Starlette drops \n, \r and \t from the path it gives (as urlsplit does); other line breaks pass
    for encoded, escaped in (("%E2%80%A8", "\\u2028"), ("%0B", "\\x0b"), ("%C2%85", "\\x85")):
        marker = uuid.uuid4().hex
        response = httpx.post(
            f"{secured.server.url}/cds-services/{marker}{encoded}CRITICAL%20forged%20line",
            json=_hook_request(secured.hook),
            headers={"Authorization": "Bearer garbage"},
            timeout=30,
        )
        assert_refused(response, "well-formed")
        log = secured.server.log_text()
        assert f"{marker}{escaped}CRITICAL forged line" in log  # shown escaped, on the refusal's own line
        assert not any(line.startswith("CRITICAL forged") for line in log.splitlines())
