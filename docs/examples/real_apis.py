"""Three real public job APIs declared as ``HttpJobApi`` blocks: data, no code.

Each declaration names only what the provider's public documentation states (the
pages are cited in ``docs/providers/http-job-api.md``, which includes this file, and
``tests/test_docs_examples.py`` runs each one against mocks shaped like those pages).
Put your own key in ``api_key`` (or load a saved block) before submitting.
"""

from __future__ import annotations

from prefect_pollers import HttpJobApi, PollPolicy

# --8<-- [start:replicate]
# Replicate predictions: POST /v1/predictions {"version", "input"}, then
# GET /v1/predictions/{id} until succeeded / failed / canceled.
replicate = HttpJobApi(
    api_name="replicate",
    base_url="https://api.replicate.com/v1",
    api_key="r8_...",  # Authorization: Bearer <token>
    submit_path="predictions",  # the request is the body: {"version": ..., "input": {...}}
    job_id_field="id",
    status_url="predictions/{job_id}",
    status_field="status",
    succeeded=["succeeded"],
    failed=["failed"],
    cancelled=["canceled"],
    pending=["starting"],  # a worker is being started
    running=["processing"],
    error_message_field="error",
    result_field="output",  # read from the final status: no separate result call
    cancel_url="predictions/{job_id}/cancel",
    policy=PollPolicy(initial_delay=2, interval=2, multiplier=1.5, max_interval=30, deadline=1800),
)
# --8<-- [end:replicate]

# --8<-- [start:assemblyai]
# AssemblyAI transcripts: POST /v2/transcript {"audio_url"}, then
# GET /v2/transcript/{id} until completed / error.
assemblyai = HttpJobApi(
    api_name="assemblyai",
    base_url="https://api.assemblyai.com/v2",
    api_key="...",
    auth_scheme="",  # the key alone in Authorization
    submit_path="transcript",  # the request is the body: {"audio_url": ...}
    job_id_field="id",
    status_url="transcript/{job_id}",
    status_field="status",
    succeeded=["completed"],
    failed=["error"],
    pending=["queued"],  # only while a job is held back (e.g. past a rate limit)
    running=["processing"],
    error_message_field="error",
    result_field="text",
    policy=PollPolicy(initial_delay=3, interval=3, multiplier=1.5, max_interval=30, deadline=3600),
)
# --8<-- [end:assemblyai]

# --8<-- [start:runpod]
# RunPod serverless (queue-based endpoints): POST /v2/{endpoint_id}/run {"input"}, then
# GET /v2/{endpoint_id}/status/{job_id} until COMPLETED / FAILED / CANCELLED / TIMED_OUT.
runpod = HttpJobApi(
    api_name="runpod",
    base_url="https://api.runpod.ai/v2/ENDPOINT_ID",  # your endpoint's id
    api_key="...",  # Authorization: Bearer <key>
    submit_path="run",  # the request is the body: {"input": {...}}
    job_id_field="id",
    status_url="status/{job_id}",
    status_field="status",
    succeeded=["COMPLETED"],
    failed=["FAILED"],
    cancelled=["CANCELLED"],
    expired=["TIMED_OUT"],
    pending=["IN_QUEUE"],
    running=["IN_PROGRESS"],
    result_field="output",
    # Results of /run jobs are kept 30 minutes after completion: poll well within that.
    policy=PollPolicy(initial_delay=2, interval=2, multiplier=1.5, max_interval=20, deadline=3600),
)
# --8<-- [end:runpod]

REAL_APIS: dict[str, HttpJobApi] = {
    "replicate": replicate,
    "assemblyai": assemblyai,
    "runpod": runpod,
}
