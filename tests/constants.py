"""Constants shared by the tests (conftest.py is pytest's, not a module to import from)."""

# Real seconds per simulated second for the session simulator: a 60 s job takes 0.6 s.
SIM_SCALE = 0.01
