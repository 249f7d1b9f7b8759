"""Example flows: copy one and adapt it."""
