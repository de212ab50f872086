"""Fixtures shared by the RX-path tests (defined in rxutil)."""
from rxutil import m, make_nic, nic  # noqa: F401
