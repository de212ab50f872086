"""Fixtures of the repo's tests beyond the netmem plugin's (``netmem.testing``: ``machine``,
``make_pool``, ``page_pool``, ``make_nic``, ``nic``)."""
import pytest


@pytest.fixture
def m(machine):
    """The test's machine, the plugin's ``machine``, under the short name most tests use (the
    plugin's ``make_nic`` and ``nic`` are on it)."""
    return machine
