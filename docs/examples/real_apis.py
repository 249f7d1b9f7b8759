"""Four real public job APIs as ``HttpJobApi`` blocks: the catalog's presets, data, no code.

Each preset is a JSON file of ``prefect_pollers/providers/catalog/`` that names only what
the provider's public documentation states (the pages are cited in the file and in
``docs/providers/``), and ``tests/test_docs_examples.py`` and ``tests/test_catalog.py``
run each one against fakes shaped like those pages. Put your own key in ``api_key`` (or
load a saved block) before submitting.
"""

from __future__ import annotations

from prefect_pollers import HttpJobApi
from prefect_pollers.providers.catalog import preset

# --8<-- [start:replicate]
# Replicate predictions: POST /v1/predictions {"version", "input"}, then
# GET /v1/predictions/{id} until succeeded / failed / canceled.
replicate = preset("replicate", api_key="r8_...")  # Authorization: Bearer <token>
# --8<-- [end:replicate]

# --8<-- [start:fal]
# fal queue: POST https://queue.fal.run/{app} answers status_url, response_url and
# cancel_url, which the preset's templates name ({status_url}, ...): one block per key,
# whatever the app.
fal = preset("fal", app="fal-ai/flux/dev", api_key="...")  # Authorization: Key <key>
# --8<-- [end:fal]

# --8<-- [start:assemblyai]
# AssemblyAI transcripts: POST /v2/transcript {"audio_url"}, then
# GET /v2/transcript/{id} until completed / error.
assemblyai = preset("assemblyai", api_key="...")  # the key alone in Authorization
# --8<-- [end:assemblyai]

# --8<-- [start:runpod]
# RunPod serverless (queue-based endpoints): POST /v2/{endpoint_id}/run {"input"}, then
# GET /v2/{endpoint_id}/status/{job_id} until COMPLETED / FAILED / CANCELLED / TIMED_OUT.
runpod = preset("runpod", endpoint_id="ENDPOINT_ID", api_key="...")
# --8<-- [end:runpod]

REAL_APIS: dict[str, HttpJobApi] = {
    "replicate": replicate,
    "fal": fal,
    "assemblyai": assemblyai,
    "runpod": runpod,
}
