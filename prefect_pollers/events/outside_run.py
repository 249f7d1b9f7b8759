"""Calls made outside the run context, so that Prefect relates their events to nothing more.

Prefect's events worker relates every event sent inside a run to the resources of
the run context it was sent from: the flow run, its flow, deployment, work queue,
work pool, the task run and the tags. Its server stores one ``event_resources`` row
per resource of an event, so an event sent from a deployment's run costs about ten
rows. :func:`outside_run` calls a function (``emit_event``, the events worker's
``send``) in a copy of the caller's context with no flow or task run: an event
sent there keeps the related resources it was given, and nothing else.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from prefect.context import FlowRunContext, TaskRunContext

P = ParamSpec("P")
T = TypeVar("T")


def outside_run(function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``function(*args, **kwargs)`` in a copy of this context without a flow or task run."""
    return contextvars.copy_context().run(_without_run, function, *args, **kwargs)


def _without_run(function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    FlowRunContext.__var__.set(None)  # type: ignore[arg-type]
    TaskRunContext.__var__.set(None)  # type: ignore[arg-type]
    return function(*args, **kwargs)
