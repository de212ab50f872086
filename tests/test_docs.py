"""The provider author's guide, ``docs/providers.md``: its Python examples, in order, are one
test module that pytest runs as a user's project would (the netmem plugin loaded from its entry
point): the provider, the walk-through by hand, the conformance suite on it, the tests with the
plugin's fixtures and the replay from Python must all pass."""
import re
import warnings
from pathlib import Path

import pytest

from netmem.testing import ProviderConformance

pytest_plugins = ["pytester"]

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "providers.md"


def guide_module():
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
    assert len(blocks) >= 5
    return "\n\n".join(blocks)


@pytest.mark.netmem_leaks_ok        # the inner run's machines: it checks its own leaks
def test_provider_guide_examples_pass(pytester):
    pytester.makepyfile(test_guide=guide_module())
    with warnings.catch_warnings():
        warnings.resetwarnings()            # as a user's process starts: no filters of ours
        result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q")
    outcomes = result.parseoutcomes()
    out = result.stdout.str()
    assert outcomes.get("failed", 0) == outcomes.get("errors", 0) == 0, out
    # every test of the conformance suite (its DMA test once per IOMMU mode), none skipped,
    # and the guide's three tests of its own
    suite = [n for n in dir(ProviderConformance) if n.startswith("test_")]
    assert outcomes == {"passed": len(suite) + 1 + 3}, out
