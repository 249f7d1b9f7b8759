"""Callbacks that end waits: URLs and tokens, the in-process inbox, the receiver.

- :mod:`~prefect_pollers.providers.callback_urls`: the callback URL a submit sends, with a
  capability token where the API signs nothing.
- :mod:`~prefect_pollers.webhooks.inbox`: where callbacks meet the waits of this
  process (and wait for a wait that has not started yet).
- :mod:`~prefect_pollers.webhooks.subscription`: callbacks received by another
  process, through Prefect's event stream.
- :mod:`~prefect_pollers.webhooks.app`: the receiver, an ASGI app (it needs the
  ``webhooks`` extra: ``pip install 'prefect-pollers[webhooks]'``), served by
  ``prefect-pollers webhooks serve``.
"""
