"""Reproducible measurements; each benchmark prints one JSON line (``make bench``)."""
