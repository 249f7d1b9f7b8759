"""Fakes of the catalog's real APIs, shaped like their public docs, on ``respx`` routes.

Each fake keeps its jobs, moves a job one state on at each status call (queued, running,
then its scripted outcome), answers 429 with Retry-After while ``throttle`` lasts,
records the callback URL a submit carried and can post the callback the vendor would.
The pages each follows are cited in ``prefect_pollers/providers/catalog/*.json``; the
SDK checks of ``tests/test_catalog.py`` compare their answers with the vendors' models.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import respx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

Outcome = str  # "succeeded", "failed", "cancelled", "expired"


@dataclass
class FakeJob:
    """One job of a fake: its request, scripted outcome, and how far it has got."""

    id: str
    request: dict[str, Any]
    outcome: Outcome
    callback_url: str | None
    polls: int = 0
    cancelled: bool = False

    def stage(self, running_after: int = 1, done_after: int = 2) -> str:
        """``queued``, ``running`` or ``done``, from the status calls answered so far."""
        if self.cancelled or self.polls >= done_after:
            return "done"
        return "running" if self.polls >= running_after else "queued"

    @property
    def ended_as(self) -> Outcome:
        return "cancelled" if self.cancelled else self.outcome


@dataclass
class VendorFake:
    """What every fake shares: jobs, the next outcome, a 429 burst, request counters."""

    key: str
    outcome: Outcome = "succeeded"
    throttle: int = 0
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def refused(self, request: httpx.Request, expected_auth: str) -> httpx.Response | None:
        """The 401 or 429 a request gets before its route, if any."""
        self.calls["requests"] += 1
        if request.headers.get("Authorization") != expected_auth:
            return httpx.Response(401, json={"detail": "Unauthenticated"})
        if self.throttle:
            self.throttle -= 1
            self.calls["429"] += 1
            return httpx.Response(429, headers={"Retry-After": "3"}, json={"detail": "slow down"})
        return None

    def new_job(self, request: dict[str, Any], callback_url: str | None) -> FakeJob:
        job = FakeJob(f"job-{next(self._ids):04d}", request, self.outcome, callback_url)
        self.jobs[job.id] = job
        self.calls["submits"] += 1
        return job


class ReplicateFake(VendorFake):
    """Replicate's predictions API (https://replicate.com/docs/reference/http)."""

    BASE = "https://api.replicate.com/v1"
    SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ="

    def mount(self, router: respx.MockRouter) -> ReplicateFake:
        base = self.BASE
        router.post(f"{base}/predictions").mock(side_effect=self._create)
        router.get(url__regex=rf"^{base}/predictions/(?P<pid>[\w-]+)$").mock(side_effect=self._get)
        router.post(url__regex=rf"^{base}/predictions/(?P<pid>[\w-]+)/cancel$").mock(
            side_effect=self._cancel
        )
        router.get(f"{base}/webhooks/default/secret").mock(side_effect=self._secret)
        return self

    def prediction(self, job: FakeJob) -> dict[str, Any]:
        stage = job.stage()
        status = {"queued": "starting", "running": "processing"}.get(stage) or {
            "succeeded": "succeeded",
            "failed": "failed",
            "cancelled": "canceled",
        }[job.ended_as]
        return {
            "id": job.id,
            "model": "replicate/hello-world",
            "version": job.request.get("version", ""),
            "input": job.request.get("input", {}),
            "logs": "",
            "output": "hello " + str(job.request.get("input", {}).get("text"))
            if status == "succeeded"
            else None,
            "error": "CUDA out of memory" if status == "failed" else None,
            "status": status,
            "data_removed": False,
            "created_at": "2026-12-07T16:19:34.765994Z",
            "started_at": None if stage == "queued" else "2026-12-07T16:19:35.000000Z",
            "completed_at": "2026-12-07T16:19:40.000000Z" if stage == "done" else None,
            "metrics": {"predict_time": 4.2} if status == "succeeded" else {},
            "urls": {
                "get": f"{self.BASE}/predictions/{job.id}",
                "cancel": f"{self.BASE}/predictions/{job.id}/cancel",
            },
            "webhook": job.callback_url,
        }

    def _create(self, request: httpx.Request) -> httpx.Response:
        refused = self.refused(request, f"Bearer {self.key}")
        if refused:
            return refused
        body = json.loads(request.content)
        if "version" not in body or "input" not in body:
            return httpx.Response(422, json={"detail": "version and input are required"})
        job = self.new_job(body, body.get("webhook"))
        return httpx.Response(201, json=self.prediction(job))

    def _get(self, request: httpx.Request, pid: str) -> httpx.Response:
        refused = self.refused(request, f"Bearer {self.key}")
        if refused:
            return refused
        if pid not in self.jobs:
            return httpx.Response(404, json={"detail": "Not found."})
        job = self.jobs[pid]
        body = self.prediction(job)
        job.polls += 1
        return httpx.Response(200, json=body)

    def _cancel(self, request: httpx.Request, pid: str) -> httpx.Response:
        refused = self.refused(request, f"Bearer {self.key}")
        if refused:
            return refused
        job = self.jobs[pid]
        job.cancelled = True
        self.calls["cancels"] += 1
        return httpx.Response(200, json=self.prediction(job))

    def _secret(self, request: httpx.Request) -> httpx.Response:
        refused = self.refused(request, f"Bearer {self.key}")
        self.calls["secret"] += 1
        return refused or httpx.Response(200, json={"key": self.SECRET})

    def callback(self, job: FakeJob) -> tuple[str, bytes]:
        """The completed event Replicate posts to the job's webhook (body unsigned here)."""
        assert job.callback_url
        return job.callback_url, json.dumps(self.prediction(job)).encode()


class FalFake(VendorFake):
    """fal's queue (https://docs.fal.ai/model-endpoints/queue) for one app.

    Status, result and cancel live under the app's owner/alias without its subpath,
    at the URLs the submit answers; a failed request ends ``COMPLETED`` with ``error``
    and ``error_type``; a cancelled one's result answers 499. Webhooks are signed as
    https://docs.fal.ai/model-endpoints/webhooks says: Ed25519 over request id, user id,
    timestamp and the body's SHA-256, under a key of the JWKS served at ``JWKS_URL``.
    """

    BASE = "https://queue.fal.run"
    JWKS_URL = "https://rest.alpha.fal.ai/.well-known/jwks.json"
    USER_ID = "fal-user-1"

    def __init__(self, key: str, app: str = "fal-ai/flux/dev", **kwargs: Any) -> None:
        super().__init__(key, **kwargs)
        self.app = app
        self.owner_alias = "/".join(app.split("/")[:2])
        self.signing_key = Ed25519PrivateKey.generate()

    def mount(self, router: respx.MockRouter) -> FalFake:
        requests = rf"^{self.BASE}/{self.owner_alias}/requests/(?P<rid>[\w-]+)"
        router.post(url__regex=rf"^{self.BASE}/{self.app}(\?.*)?$").mock(side_effect=self._submit)
        router.get(url__regex=requests + r"/status(\?.*)?$").mock(side_effect=self._status)
        router.get(url__regex=requests + "$").mock(side_effect=self._result)
        router.put(url__regex=requests + "/cancel$").mock(side_effect=self._cancel)
        router.get(self.JWKS_URL).mock(side_effect=self._jwks)
        return self

    def urls(self, job: FakeJob) -> dict[str, str]:
        root = f"{self.BASE}/{self.owner_alias}/requests/{job.id}"
        return {
            "response_url": root,
            "status_url": f"{root}/status",
            "cancel_url": f"{root}/cancel",
        }

    def status(self, job: FakeJob) -> dict[str, Any]:
        stage = job.stage()
        if stage == "queued":
            return {
                "status": "IN_QUEUE",
                "queue_position": 0,
                "response_url": self.urls(job)["response_url"],
            }
        if stage == "running":
            return {
                "status": "IN_PROGRESS",
                "logs": None,
                "response_url": self.urls(job)["response_url"],
            }
        done: dict[str, Any] = {
            "status": "COMPLETED",
            "logs": None,
            "metrics": {"inference_time": 1.5},
            "response_url": self.urls(job)["response_url"],
        }
        if job.ended_as == "failed":
            done.update(error="Unprocessable: NSFW content detected", error_type="content_policy")
        return done

    def _submit(self, request: httpx.Request) -> httpx.Response:
        refused = self.refused(request, f"Key {self.key}")
        if refused:
            return refused
        webhook = parse_qs(urlsplit(str(request.url)).query).get("fal_webhook", [None])[0]
        job = self.new_job(json.loads(request.content), webhook)
        return httpx.Response(
            200, json={"request_id": job.id, **self.urls(job), "queue_position": 0}
        )

    def _status(self, request: httpx.Request, rid: str) -> httpx.Response:
        refused = self.refused(request, f"Key {self.key}")
        if refused:
            return refused
        job = self.jobs[rid]
        body = self.status(job)
        job.polls += 1
        return httpx.Response(200, json=body)

    def _result(self, request: httpx.Request, rid: str) -> httpx.Response:
        refused = self.refused(request, f"Key {self.key}")
        if refused:
            return refused
        job = self.jobs[rid]
        self.calls["results"] += 1
        if job.stage() != "done":
            return httpx.Response(400, json={"detail": "Request is still in progress"})
        if job.ended_as == "cancelled":
            return httpx.Response(499, json={"detail": "Request cancelled"})
        if job.ended_as == "failed":
            return httpx.Response(422, json={"detail": "Unprocessable"})
        image = {"url": "https://v3.fal.media/files/x.png", "width": 1024, "height": 768}
        return httpx.Response(200, json={"images": [image], "seed": 42, "prompt": "a cat"})

    def _cancel(self, request: httpx.Request, rid: str) -> httpx.Response:
        refused = self.refused(request, f"Key {self.key}")
        if refused:
            return refused
        job = self.jobs[rid]
        self.calls["cancels"] += 1
        if job.stage() == "done":
            return httpx.Response(400, json={"status": "ALREADY_COMPLETED"})
        job.cancelled = True
        return httpx.Response(202, json={"status": "CANCELLATION_REQUESTED"})

    def _jwks(self, request: httpx.Request) -> httpx.Response:
        self.calls["jwks"] += 1
        raw = self.signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return httpx.Response(200, json={"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x}]})

    def callback(self, job: FakeJob) -> tuple[str, bytes]:
        """What fal posts to ``fal_webhook`` when the request is done."""
        assert job.callback_url
        body: dict[str, Any] = {"request_id": job.id, "gateway_request_id": job.id}
        if job.ended_as == "succeeded":
            body |= {"status": "OK", "payload": {"images": [], "seed": 42}}
        else:
            body |= {"status": "ERROR", "error": "Invalid status code: 422", "payload": {}}
        return job.callback_url, json.dumps(body).encode()

    def signature_headers(
        self, job: FakeJob, body: bytes, key: Ed25519PrivateKey | None = None
    ) -> dict[str, str]:
        """fal's ``X-Fal-Webhook-*`` headers signing ``body`` (with ``key``: a forgery)."""
        ts = str(int(time.time()))
        digest = hashlib.sha256(body).hexdigest()
        message = "\n".join((job.id, self.USER_ID, ts, digest)).encode()
        return {
            "X-Fal-Webhook-Request-Id": job.id,
            "X-Fal-Webhook-User-Id": self.USER_ID,
            "X-Fal-Webhook-Timestamp": ts,
            "X-Fal-Webhook-Signature": (key or self.signing_key).sign(message).hex(),
        }


class RunPodFake(VendorFake):
    """A RunPod queue-based serverless endpoint (docs.runpod.io job operations)."""

    def __init__(self, key: str, endpoint_id: str = "ep123", **kwargs: Any) -> None:
        super().__init__(key, **kwargs)
        self.base = f"https://api.runpod.ai/v2/{endpoint_id}"

    def mount(self, router: respx.MockRouter) -> RunPodFake:
        router.post(f"{self.base}/run").mock(side_effect=self._run)
        router.get(url__regex=rf"^{self.base}/status/(?P<jid>[\w-]+)$").mock(
            side_effect=self._status
        )
        router.post(url__regex=rf"^{self.base}/cancel/(?P<jid>[\w-]+)$").mock(
            side_effect=self._cancel
        )
        return self

    def status(self, job: FakeJob) -> dict[str, Any]:
        stage = job.stage()
        if stage != "done":
            return {"id": job.id, "status": "IN_QUEUE" if stage == "queued" else "IN_PROGRESS"}
        ended = job.ended_as
        body: dict[str, Any] = {
            "id": job.id,
            "status": {
                "succeeded": "COMPLETED",
                "failed": "FAILED",
                "cancelled": "CANCELLED",
                "expired": "TIMED_OUT",
            }[ended],
            "delayTime": 824,
            "executionTime": 3391,
        }
        if ended == "succeeded":
            body["output"] = [{"image": "https://image.url", "seed": 46578}]
        if ended == "failed":
            body["error"] = "handler raised ValueError: bad prompt"
        return body

    def _run(self, request: httpx.Request) -> httpx.Response:
        refused = self.refused(request, f"Bearer {self.key}")
        if refused:
            return refused
        body = json.loads(request.content)
        if "input" not in body:
            return httpx.Response(400, json={"error": "input is required"})
        job = self.new_job(body, body.get("webhook"))
        return httpx.Response(200, json={"id": job.id, "status": "IN_QUEUE"})

    def _status(self, request: httpx.Request, jid: str) -> httpx.Response:
        refused = self.refused(request, f"Bearer {self.key}")
        if refused:
            return refused
        job = self.jobs[jid]
        body = self.status(job)
        job.polls += 1
        return httpx.Response(200, json=body)

    def _cancel(self, request: httpx.Request, jid: str) -> httpx.Response:
        refused = self.refused(request, f"Bearer {self.key}")
        if refused:
            return refused
        job = self.jobs[jid]
        job.cancelled = True
        self.calls["cancels"] += 1
        return httpx.Response(200, json={"id": job.id, "status": "CANCELLED"})

    def callback(self, job: FakeJob) -> tuple[str, bytes]:
        """RunPod posts the job's final status to ``webhook``."""
        assert job.callback_url
        job.polls = max(job.polls, 2)
        return job.callback_url, json.dumps(self.status(job)).encode()


class AssemblyAIFake(VendorFake):
    """AssemblyAI's transcripts (https://www.assemblyai.com/docs/api-reference)."""

    BASE = "https://api.assemblyai.com/v2"

    def mount(self, router: respx.MockRouter) -> AssemblyAIFake:
        router.post(f"{self.BASE}/transcript").mock(side_effect=self._submit)
        router.get(url__regex=rf"^{self.BASE}/transcript/(?P<tid>[\w-]+)$").mock(
            side_effect=self._get
        )
        return self

    def transcript(self, job: FakeJob) -> dict[str, Any]:
        stage = job.stage()
        status = {"queued": "queued", "running": "processing"}.get(stage) or (
            "completed" if job.ended_as == "succeeded" else "error"
        )
        return {
            "id": job.id,
            "audio_url": job.request.get("audio_url"),
            "status": status,
            "text": "Smoke from hundreds of wildfires in Canada" if status == "completed" else None,
            "error": f"Download error, unable to download {job.request.get('audio_url')}"
            if status == "error"
            else None,
            "webhook_url": job.callback_url,
            "webhook_auth": False,
            "audio_duration": 281 if status == "completed" else None,
            "confidence": 0.93 if status == "completed" else None,
            "language_code": "en_us",
        }

    def _submit(self, request: httpx.Request) -> httpx.Response:
        refused = self.refused(request, self.key)
        if refused:
            return refused
        body = json.loads(request.content)
        if "audio_url" not in body:
            return httpx.Response(400, json={"error": "audio_url is required"})
        job = self.new_job(body, body.get("webhook_url"))
        return httpx.Response(200, json=self.transcript(job))

    def _get(self, request: httpx.Request, tid: str) -> httpx.Response:
        refused = self.refused(request, self.key)
        if refused:
            return refused
        job = self.jobs[tid]
        body = self.transcript(job)
        job.polls += 1
        return httpx.Response(200, json=body)

    def callback(self, job: FakeJob) -> tuple[str, bytes]:
        """AssemblyAI posts ``transcript_id`` and ``status`` to ``webhook_url``."""
        assert job.callback_url
        job.polls = max(job.polls, 2)
        status = self.transcript(job)["status"]
        return job.callback_url, json.dumps({"transcript_id": job.id, "status": status}).encode()
