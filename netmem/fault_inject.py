"""Function error injection on the page pool: ``/sys/kernel/debug/fail_function``.

Models kernel/fail_function.c with lib/fault-inject.c's ``should_fail_ex()`` for the one
function the model lets fail, ``page_pool_alloc_netmems()`` (mainline marks it
``ALLOW_ERROR_INJECTION(page_pool_alloc_netmems, NULL)``: an injected failure returns 0, no
buffer, before the function runs; earlier kernels had the mark on ``page_pool_alloc_pages()``,
which the selftest still names).
``m.fail_function`` has the debugfs files as attributes: ``inject`` (the function's name, ""
for none), ``interval``, ``probability`` (percent), ``times`` (-1: no limit) and ``verbose``;
``failures`` counts what was injected. Defaults are ``FAULT_ATTR_INITIALIZER``'s: interval 1,
times 1, verbose 2, probability 0. Departs: one function only (another name is EINVAL, as the
kernel refuses a function without the mark); no ``space``, ``task-filter``, ``stacktrace-depth``
or ``fail-nth``; ``verbose`` is kept but nothing is logged; the random draw is a xorshift32
seeded from the machine's seed.
"""
import random

from netmem import _core
from netmem.errors import NetmemError

__all__ = ["INJECTABLE", "FailFunction"]

#: The functions the model's fail_function accepts.
INJECTABLE = ("page_pool_alloc_netmems",)

_LIMITS = {"interval": (1, (1 << 32) - 1), "probability": (0, 100), "times": (-1, (1 << 31) - 1),
           "verbose": (0, 2)}


class FailFunction:
    """``m.fail_function``: the fail_function debugfs directory of machine ``m``."""

    def __init__(self, machine):
        self._m = machine
        _core._fei_config(machine, interval=1, times=1, verbose=2,
                          seed=random.Random(f"fail_function {machine.seed}").getrandbits(32))

    @property
    def inject(self):
        """The function failures are injected into, or ""."""
        return INJECTABLE[0] if _core._fei_config(self._m)["enabled"] else ""

    @inject.setter
    def inject(self, name):
        name = name.strip()
        if name and name not in INJECTABLE:
            raise NetmemError(22, f"fail_function/inject: {name!r} is not an error-injectable "
                                  f"function (the model's: {', '.join(INJECTABLE)})")
        _core._fei_config(self._m, enabled=bool(name))

    @property
    def failures(self):
        """Failures injected so far (the model's count; the kernel logs them when verbose)."""
        return _core._fei_config(self._m)["failures"]

    def __getattr__(self, name):
        if name in _LIMITS:
            return _core._fei_config(self._m)[name]
        raise AttributeError(name)

    def __setattr__(self, name, value):
        if name in _LIMITS:
            lo, hi = _LIMITS[name]
            if not isinstance(value, int) or not lo <= value <= hi:
                raise NetmemError(22, f"fail_function/{name}: {value!r} not in {lo}..{hi}")
            _core._fei_config(self._m, **{name: value})
        else:
            super().__setattr__(name, value)
