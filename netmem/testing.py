"""The netmem pytest plugin (entry point ``pytest11``).

Every test gets a leak check: each Machine made during the test is quiesced at the end (its
deferred work runs, up to two virtual minutes) and must have no page pool left, no page missing
from the buddy allocator and no net_iov still attached; otherwise the test fails with the
machine's own report. Mark a test ``@pytest.mark.netmem_leaks_ok`` to skip the check.
"""
import pytest

from netmem.machine import Machine
from netmem.page_pool import PagePoolParams, page_pool_create_percpu

__all__ = ["machine", "make_pool"]


def pytest_configure(config):
    config.addinivalue_line("markers", "netmem_leaks_ok: skip the netmem leak check")


@pytest.fixture(autouse=True)
def _netmem_leak_check(request, monkeypatch):
    made = []
    init = Machine.__init__

    def tracking_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Machine, "__init__", tracking_init)
    yield
    if request.node.get_closest_marker("netmem_leaks_ok"):
        return
    problems = []
    for i, m in enumerate(made):
        m.quiesce()
        problems += [f"machine {i}: {line}" for line in m.leak_report()]
    if problems:
        pytest.fail("netmem leak check:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture
def machine():
    """A small machine: 64 MiB, one node, two CPUs."""
    return Machine(memory="64MiB", numa_nodes=1, cpus=2)


@pytest.fixture
def make_pool(machine):
    """``make_pool(cpuid=-1, provider=None, m=None, **params)``: a page pool on the test's
    machine (or ``m``) from ``PagePoolParams(**params)``; pools the test did not destroy are
    destroyed at teardown (the leak check then quiesces the machine)."""
    made = []

    def make(cpuid=-1, provider=None, m=None, **params):
        pool = page_pool_create_percpu(m or machine, PagePoolParams(**params), cpuid, provider)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        if pool.user_cnt:
            pool.destroy()
