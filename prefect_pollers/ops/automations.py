"""Saving the automations this project ships: by name, idempotently."""

from __future__ import annotations

from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.events.schemas.automations import AutomationCore


async def save_automation(client: PrefectClient, automation: AutomationCore) -> UUID:
    """Create ``automation``, or update the one of its name in place (removing twins).

    Prefect's client sends an update with ``exclude_unset``, which drops defaults such
    as an action's ``type`` (the server then reads a ``do-nothing`` action): the
    update sends a copy in which every field is set (but ``owner_resource``, which the
    update refuses).
    """
    existing = await client.read_automations_by_name(automation.name)
    if not existing:
        return await client.create_automation(automation)
    explicit = AutomationCore.model_validate(
        automation.model_dump(mode="json", exclude={"owner_resource"})
    )
    await client.update_automation(existing[0].id, explicit)
    for twin in existing[1:]:
        await client.delete_automation(twin.id)
    return existing[0].id
