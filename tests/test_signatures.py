"""Signature schemes as data: Standard Webhooks, HMAC headers, Ed25519 under a JWKS.

Each scheme verifies a good request and refuses a bad signature, a stale timestamp
and a replay; Ed25519 also an unknown key, with JWKS fetches bounded by the cooldown.
Requests are signed here with ``hmac`` and ``cryptography`` directly, not with the
code under test.
"""

import base64
import hashlib
import hmac
import json
import tempfile
import time

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import SecretStr, ValidationError

from prefect_pollers import HttpJobApi
from prefect_pollers.ledger.replays import LedgerReplays
from prefect_pollers.providers.signatures import (
    FAL,
    GITHUB,
    STRIPE,
    CapabilityUrl,
    Ed25519Jwks,
    HmacSignature,
    StandardWebhooks,
)
from prefect_pollers.testing.registry import GENERIC_SIMULATOR_API
from prefect_pollers.webhooks.app import create_webhook_app
from prefect_pollers.webhooks.inbox import CallbackInbox
from prefect_pollers.webhooks.jwks import JwksKeys
from prefect_pollers.webhooks.signatures import Rejection, check_hmac
from prefect_pollers.webhooks.verify import CallbackVerifier

HMAC_SECRET = "It's a Secret to Everybody"
BODY = json.dumps({"task": {"uid": "t-1", "state": {"name": "DONE"}}}).encode()
JWKS_URL = "http://127.0.0.1:9/.well-known/jwks.json"
FAL_TEST = FAL.model_copy(update={"jwks_url": JWKS_URL})


def block(scheme, secret=HMAC_SECRET, **fields):
    return HttpJobApi(
        **GENERIC_SIMULATOR_API,
        api_key="sim-key",
        base_url="http://127.0.0.1:9/generic/v2",
        callback_base_url="http://127.0.0.1:8",
        callback_url_field="task.callback_url",
        callback_job_id_field="task.uid",
        callback_scheme=scheme,
        webhook_secret=secret,
        **fields,
    )


def github_headers(body, secret=HMAC_SECRET, delivery="d-1"):
    mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={mac}", "X-GitHub-Delivery": delivery}


def stripe_headers(body, ts, secret=HMAC_SECRET):
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={ts},v1={'0' * 64},v1={mac}"}


def jwk(key):
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).decode().rstrip("=")}


def fal_headers(key, body, ts=None, request_id="r-1"):
    ts = str(int(time.time()) if ts is None else ts)
    message = "\n".join((request_id, "u-1", ts, hashlib.sha256(body).hexdigest())).encode()
    return {
        "X-Fal-Webhook-Request-Id": request_id,
        "X-Fal-Webhook-User-Id": "u-1",
        "X-Fal-Webhook-Timestamp": ts,
        "X-Fal-Webhook-Signature": key.sign(message).hex(),
    }


class Jwks:
    """A JWKS server in an httpx MockTransport, counting its requests."""

    def __init__(self, *keys):
        self.keys = list(keys)
        self.requests = 0
        self.status = 200
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request):
        assert str(request.url) == JWKS_URL
        self.requests += 1
        return httpx.Response(self.status, json={"keys": [jwk(k) for k in self.keys]})


async def refused(verifier, headers, body=BODY, provider="generic"):
    with pytest.raises(Rejection) as caught:
        await verifier.verify(provider, "-", None, headers, body)
    return caught.value


def test_github_documented_vector():
    headers = github_headers(b"Hello, World!")
    assert headers["X-Hub-Signature-256"] == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )
    assert check_hmac(GITHUB, HMAC_SECRET, headers, b"Hello, World!", 0.0) == "id:d-1"
    with pytest.raises(Rejection):
        check_hmac(GITHUB, HMAC_SECRET, headers, b"Hello, World?", 0.0)


async def test_github_scheme_verifies_and_refuses_bad_signatures():
    verifier = CallbackVerifier([block(GITHUB)])
    verified = await verifier.verify("generic", "-", None, github_headers(BODY), BODY)
    assert verified.delivery.job_id == "t-1"
    assert verified.delivery.delivery_id == "id:d-1"
    assert (await refused(verifier, github_headers(BODY, secret="another"))).status == 401
    assert (await refused(verifier, {})).reason == "missing signature headers"
    bad = github_headers(BODY) | {"X-Hub-Signature-256": "sha1=" + "0" * 40}
    assert (await refused(verifier, bad)).status == 401


async def test_stripe_scheme_checks_the_timestamp_and_any_v1():
    now = 1_700_000_000
    verifier = CallbackVerifier([block(STRIPE)], now=lambda: now)
    verified = await verifier.verify("generic", "-", None, stripe_headers(BODY, now - 10), BODY)
    assert verified.delivery.delivery_id.startswith("signature:")
    assert verified.remember_until > now + 600
    stale = await refused(verifier, stripe_headers(BODY, now - 301))
    assert "tolerance" in stale.reason
    assert (await refused(verifier, stripe_headers(BODY + b" ", now))).status == 401


async def test_hmac_base64_digest_sha1_and_timestamp_header():
    scheme = HmacSignature(
        header="X-Sig",
        signed="{id}.{timestamp}.{body}",
        digest="sha1",
        encoding="base64",
        timestamp_header="X-Ts",
        id_header="X-Id",
    )
    now = 1_700_000_000
    mac = hmac.new(HMAC_SECRET.encode(), f"e-1.{now}.".encode() + BODY, hashlib.sha1).digest()
    headers = {"X-Sig": base64.b64encode(mac).decode(), "X-Ts": str(now), "X-Id": "e-1"}
    verifier = CallbackVerifier([block(scheme)], now=lambda: now)
    assert (
        await verifier.verify("generic", "-", None, headers, BODY)
    ).delivery.delivery_id == "id:e-1"
    assert (await refused(verifier, headers | {"X-Id": "e-2"})).status == 401
    assert (await refused(verifier, headers | {"X-Ts": "nan"})).reason.startswith("missing or")


async def test_ed25519_verifies_under_any_listed_key_and_refuses_the_rest():
    old, new, stranger = (Ed25519PrivateKey.generate() for _ in range(3))
    jwks = Jwks(old, new)
    verifier = CallbackVerifier([block(FAL_TEST, secret=None)], jwks_transport=jwks.transport)
    for key in (old, new):
        verified = await verifier.verify("generic", "-", None, fal_headers(key, BODY), BODY)
        assert verified.delivery.job_id == "t-1" and verified.delivery.delivery_id == "id:r-1"
    assert jwks.requests == 1  # cached
    assert (await refused(verifier, fal_headers(stranger, BODY))).status == 401
    stale = fal_headers(new, BODY, ts=int(time.time()) - 301)
    assert "tolerance" in (await refused(verifier, stale)).reason
    tampered = fal_headers(new, BODY) | {"X-Fal-Webhook-User-Id": "u-2"}
    assert (await refused(verifier, tampered)).status == 401
    assert (await refused(verifier, fal_headers(new, BODY), body=BODY + b" ")).status == 401


async def test_a_rotated_key_verifies_after_one_refetch():
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    jwks = Jwks(old)
    scheme = FAL_TEST.model_copy(update={"refetch_cooldown_s": 0.0})
    verifier = CallbackVerifier([block(scheme, secret=None)], jwks_transport=jwks.transport)
    await verifier.verify("generic", "-", None, fal_headers(old, BODY), BODY)
    jwks.keys = [new]  # the provider rotates
    await verifier.verify("generic", "-", None, fal_headers(new, BODY, request_id="r-2"), BODY)
    await verifier.verify("generic", "-", None, fal_headers(new, BODY, request_id="r-3"), BODY)
    assert jwks.requests == 2


async def test_a_forged_flood_costs_one_jwks_fetch_per_cooldown():
    key, forger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    jwks = Jwks(key)
    clock = [0.0]
    keys = JwksKeys(
        JWKS_URL, ttl_s=3600, cooldown_s=30, transport=jwks.transport, now=lambda: clock[0]
    )
    verifier = CallbackVerifier([block(FAL_TEST, secret=None)], jwks_transport=jwks.transport)
    verifier.jwks["generic"] = keys
    for second in range(90):  # 10 forged callbacks a second for 90 s
        clock[0] = float(second)
        for _ in range(10):
            assert (await refused(verifier, fal_headers(forger, BODY))).status == 401
    assert jwks.requests == 3  # at 0 s (the first fetch), 30 s and 60 s
    assert await verifier.verify("generic", "-", None, fal_headers(key, BODY), BODY)


async def test_an_unreachable_jwks_refuses_and_keeps_the_keys_it_has():
    key = Ed25519PrivateKey.generate()
    jwks = Jwks(key)
    clock = [0.0]
    keys = JwksKeys(
        JWKS_URL, ttl_s=10, cooldown_s=5, transport=jwks.transport, now=lambda: clock[0]
    )
    assert len(await keys.keys()) == 1
    jwks.status = 503
    clock[0] = 11.0
    assert len(await keys.keys()) == 1  # the fetch failed: the old keys stay in use
    assert not await keys.refresh(keys.fetches)  # within the cooldown of that failed fetch


async def test_replays_are_refused_under_every_signed_scheme():
    key = Ed25519PrivateKey.generate()
    jwks = Jwks(key)
    now = int(time.time())
    cases = [
        (block(GITHUB), github_headers(BODY)),
        (block(STRIPE), stripe_headers(BODY, now)),
        (block(FAL_TEST, secret=None), fal_headers(key, BODY)),
    ]
    for credentials, headers in cases:
        ledger = "sqlite+aiosqlite:///" + tempfile.mkdtemp() + "/ledger.db"
        app = create_webhook_app(
            [credentials],
            inbox=CallbackInbox(),
            emit_events=False,
            replays=LedgerReplays(ledger),
            jwks_transport=jwks.transport,
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hooks"
        ) as client:
            first = await client.post("/hooks/generic/-", content=BODY, headers=headers)
            again = await client.post("/hooks/generic/-", content=BODY, headers=headers)
        assert (first.status_code, again.status_code) == (200, 409)


def test_scheme_names_still_load_and_schemes_hold_no_secret():
    assert isinstance(
        block("standard-webhooks", secret="whsec_" + "c2VjcmV0" * 4).callback_scheme,
        StandardWebhooks,
    )
    capability = block("capability-url", secret="x" * 32)
    assert isinstance(capability.callback_spec().scheme, CapabilityUrl)
    github = block(GITHUB)
    assert HMAC_SECRET not in repr(github) and HMAC_SECRET not in str(github.model_dump())
    assert not {"secret", "key", "webhook_secret"} & set(GITHUB.model_dump())
    with pytest.raises(ValidationError, match="webhook_secret"):
        block(GITHUB, secret=None)
    assert block(FAL_TEST, secret=None).webhook_secret is None  # public keys: no secret


async def test_rejections_name_no_secret():
    verifier = CallbackVerifier([block(GITHUB)])
    for headers in (github_headers(BODY, secret="guess"), {}, {"X-Hub-Signature-256": HMAC_SECRET}):
        rejection = await refused(verifier, headers)
        assert HMAC_SECRET not in str(rejection) and HMAC_SECRET not in rejection.reason


def test_jwks_urls_are_https_loopback_or_on_the_api_origin():
    with pytest.raises(ValidationError, match="jwks_url"):
        Ed25519Jwks.model_validate(FAL.model_dump() | {"jwks_url": "http://keys.example.com/j"})
    relative = Ed25519Jwks.model_validate(FAL.model_dump() | {"jwks_url": "/.well-known/jwks.json"})
    assert relative.resolved_jwks_url("http://127.0.0.1:9/generic/v2") == (
        "http://127.0.0.1:9/.well-known/jwks.json"
    )
    with pytest.raises(ValidationError, match="placeholder"):
        HmacSignature(header="X-Sig", signed="{body}.{secret}")


class ServedSecretApi(HttpJobApi):
    """An API that serves its signing secret: fetched on first use, None until then."""

    _block_type_slug = "served-secret-api-test"
    fetches_signing_secret = True
    served: str | None = None

    async def signing_secret(self):
        return SecretStr(self.served) if self.served else None


async def test_a_secret_the_provider_serves_is_resolved_lazily():
    api = ServedSecretApi(
        **GENERIC_SIMULATOR_API,
        api_key="sim-key",
        base_url="http://127.0.0.1:9/generic/v2",
        callback_base_url="http://127.0.0.1:8",
        callback_url_field="task.callback_url",
        callback_job_id_field="task.uid",
        callback_scheme=GITHUB,
    )
    verifier = CallbackVerifier([api])
    assert (await refused(verifier, github_headers(BODY))).status == 503  # not served yet
    api.served = HMAC_SECRET
    verified = await verifier.verify("generic", "-", None, github_headers(BODY), BODY)
    assert verified.delivery.job_id == "t-1"
