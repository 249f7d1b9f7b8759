"""Scheduled deployments of the example flows and the demo blocks they load."""
