"""A catalog of real job APIs, shipped as data: ready ``HttpJobApi`` presets by name.

Each API is one JSON file next to this module (in the wheel as package data): its
title, the public docs it follows, the parameters a user gives (fal's ``app``,
RunPod's ``endpoint_id``, written ``${name}`` in the fields) and the block's fields.
:func:`preset` builds the block; any field given to it overrides the file's::

    from prefect_pollers.providers.catalog import preset

    fal = preset("fal", app="fal-ai/flux/dev", api_key="...")
    runpod = preset("runpod", endpoint_id="abc123", api_key="...", policy={"deadline": 600})

Callbacks stay off until ``callback_base_url`` (and a ``webhook_secret``, except for
Replicate, whose secret the receiver fetches from its API, and fal, whose webhooks are
Ed25519-signed under its JWKS) is given.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from string import Template
from typing import Any

from pydantic import BaseModel, ConfigDict

from prefect_pollers.providers.http_job_api import HttpJobApi

_PARAMETER_VALUE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)*$")


class CatalogEntry(BaseModel):
    """One API of the catalog, as its JSON file states it.

    Attributes:
        title: What the API is, for docs and listings.
        docs: The public pages the declaration follows.
        parameters: The values a user must give, name -> what it is.
        block: The ``HttpJobApi`` fields, ``${name}`` standing for a parameter.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: str
    docs: tuple[str, ...]
    parameters: dict[str, str]
    block: dict[str, Any]


def names() -> list[str]:
    """The catalog's API names, sorted."""
    files = resources.files(__package__).iterdir()
    return sorted(f.name.removesuffix(".json") for f in files if f.name.endswith(".json"))


@cache
def entry(name: str) -> CatalogEntry:
    """The catalog entry of ``name``.

    Raises:
        ValueError: naming the catalog's APIs, when ``name`` is not one of them.
    """
    if name not in names():
        raise ValueError(f"no API {name!r} in the catalog; it has {', '.join(names())}")
    text = resources.files(__package__).joinpath(f"{name}.json").read_text(encoding="utf-8")
    return CatalogEntry.model_validate(json.loads(text))


def preset(name: str, **values: Any) -> HttpJobApi:
    """The ``HttpJobApi`` block of the catalog's API ``name``.

    Args:
        name: The API (:func:`names`).
        **values: Its parameters (e.g. ``app`` for fal) and any ``HttpJobApi`` field
            (``api_key``, ``callback_base_url``, a ``policy`` or its fields as a dict,
            which update the preset's policy).

    Raises:
        ValueError: an unknown API, a missing or unusable parameter, or a name that is
            neither a parameter nor a field.
        pydantic.ValidationError: a field's value the block refuses.
    """
    found = entry(name)
    parameters = {key: values.pop(key) for key in list(values) if key in found.parameters}
    missing = sorted(set(found.parameters) - set(parameters))
    if missing:
        wanted = "; ".join(f"{key}: {found.parameters[key]}" for key in missing)
        raise ValueError(f"the {name} preset needs {wanted}")
    for key, value in parameters.items():
        if not isinstance(value, str) or not _PARAMETER_VALUE.match(value):
            raise ValueError(
                f"{key}={value!r}: letters, digits, '.', '_', '-' and '/' between names only"
            )
    unknown = sorted(set(values) - set(HttpJobApi.model_fields))
    if unknown:
        raise ValueError(
            f"{', '.join(unknown)}: neither a parameter of the {name} preset "
            f"({', '.join(found.parameters) or 'it has none'}) nor an HttpJobApi field"
        )
    fields = _substituted(found.block, parameters)
    policy = values.pop("policy", None)
    if isinstance(policy, dict):
        values["policy"] = {**fields.get("policy", {}), **policy}
    elif policy is not None:
        values["policy"] = policy
    return HttpJobApi.model_validate({**fields, **values})


def _substituted(value: Any, parameters: dict[str, str]) -> Any:
    """``value`` with each ``${name}`` of its strings replaced by its parameter."""
    if isinstance(value, str):
        return Template(value).substitute(parameters) if "$" in value else value
    if isinstance(value, dict):
        return {key: _substituted(item, parameters) for key, item in value.items()}
    if isinstance(value, list):
        return [_substituted(item, parameters) for item in value]
    return value
