"""netmem-replay with any registered memory provider: a provider in an outside package, really
installed with pip (offline, into a directory of its own) and found through the
``netmem.providers`` entry points, replays end to end; ``--list-providers`` shows it;
``--provider-arg`` reaches it; a provider that cannot be replayed is exit code 2 with one line
saying what to implement, nothing written and nothing leaked. The example provider also passes
the provider conformance suite.

The outside provider is ``docs/examples/hugechunk`` (copied, then installed); the providers that
must be refused are a package the tests write. One module-wide install (pip takes a second or
two); the refusals run ``main()`` in-process with that directory on ``sys.path``.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from netmem.errors import NetmemError
from netmem.provider import ReplayBinding
from netmem.replay import REPORT_SCHEMA, main
from netmem.testing import ProviderConformance

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "hugechunk"
SMALL = ["--connections", "4", "--payload", "64KiB"]
HUGE = ["--provider", "hugechunk", "--provider-arg", "size=32MiB", "--provider-arg",
        "chunk=2MiB"]

BAD_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "netmem-badproviders"
version = "0.1.0"

[project.entry-points."netmem.providers"]
notaprovider = "badproviders:NotAProvider"
oneargs = "badproviders:OneArgInit"
nomap = "badproviders:NoMemoryMap"
noid = "badproviders:NoOwnerId"
noreturn = "badproviders:ReturnsNothing"
gone = "badproviders_gone:Nothing"

[tool.setuptools]
py-modules = ["badproviders"]
"""

BAD_MODULE = '''\
"""Providers netmem-replay must refuse, each for one reason."""
import numpy as np

from hugechunk import HugeChunkProvider
from netmem import NetIovArea


class NotAProvider:
    """Neither a MemoryProvider nor a replay_setup."""


class OneArgInit(HugeChunkProvider):
    """A constructor that takes no NIC."""

    def __init__(self, machine):
        raise AssertionError("never called with one argument")


class NoMemoryMap(HugeChunkProvider):
    """net_iovs the application could not read."""

    memory_map = None


class NoOwnerId(HugeChunkProvider):
    """net_iovs whose area names no binding (owner_id 0)."""

    def __init__(self, machine, nic):
        super().__init__(machine, nic, size=32 << 20)
        self.area.free()
        self.area = NetIovArea(machine, (32 << 20) >> 12)
        self.free = self.area.niovs.tolist()


class ReturnsNothing:
    """A replay_setup that returns no ReplayBinding."""

    @classmethod
    def replay_setup(cls, rig):
        return np.zeros(3)
'''


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    """hugechunk and the refused providers, installed with pip into a directory of their own."""
    root = tmp_path_factory.mktemp("plugins")
    shutil.copytree(EXAMPLE, root / "hugechunk", ignore=shutil.ignore_patterns("__pycache__"))
    bad = root / "badproviders"
    bad.mkdir()
    (bad / "pyproject.toml").write_text(BAD_PYPROJECT)
    (bad / "badproviders.py").write_text(BAD_MODULE)
    target = root / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--no-build-isolation", "--no-index", "--disable-pip-version-check",
                           "--target", str(target), str(root / "hugechunk"), str(bad)],
                          capture_output=True, text=True, check=False, cwd=root)
    assert proc.returncode == 0, proc.stderr
    return target


@pytest.fixture
def installed(plugin_dir, monkeypatch):
    """The plugins visible to this process (``importlib.metadata`` reads ``sys.path``)."""
    monkeypatch.syspath_prepend(str(plugin_dir))
    return plugin_dir


def replay_subprocess(plugin_dir, cwd, *argv):
    env = dict(os.environ, PYTHONPATH=str(plugin_dir))
    return subprocess.run([sys.executable, "-m", "netmem.replay", *argv], capture_output=True,
                          text=True, check=False, env=env, cwd=cwd)


# ---- the outside provider, end to end -----------------------------------------------------------

def test_outside_provider_replays_through_its_entry_point(plugin_dir, tmp_path):
    out = tmp_path / "r.json"
    proc = replay_subprocess(plugin_dir, tmp_path, *HUGE, *SMALL, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, REPORT_SCHEMA)
    assert doc["config"]["provider"] == "hugechunk"
    assert doc["config"]["provider-args"] == {"size": 32 << 20, "chunk": 2 << 20}
    assert doc["config"]["dmabuf-size"] == 32 << 20             # what its memory map holds
    assert doc["validation"]["result"] == "ok" and doc["validation"]["bytes"] > 0
    assert doc["inflight-after-teardown"] == 0 and doc["leaks"] == []
    assert doc["iommu"]["faults"] == 0
    assert doc["devmem"]["dmabuf-frags"] > 0                    # read through memory_map()
    assert doc["devmem"]["tokens-returned"] == doc["devmem"]["dmabuf-frags"]
    assert all(q["bound"] for q in doc["queues"])


def test_outside_provider_under_dma_iommu_on_chosen_queues(installed, tmp_path):
    """The chunks are mapped through the IOMMU (one IOVA range): the NIC's writes land, the
    application reads them back, and unbinding, unmapping and freeing leave nothing."""
    out = tmp_path / "r.json"
    code = main([*HUGE, *SMALL, "--iommu", "dma-iommu", "--queues", "3", "--bind-queues", "1-2",
                 "--json", str(out)])
    doc = json.loads(out.read_text())
    assert code == 0, doc["validation"]
    assert [q["bound"] for q in doc["queues"]] == [False, True, True]
    assert doc["queues"][0]["qstats"]["rx-packets"] == 0
    assert doc["iommu"]["faults"] == 0 and doc["validation"]["result"] == "ok"


def test_a_provider_class_replays_from_python_unregistered(monkeypatch):
    """``run(Config(provider=cls))``: a class being written replays before it is packaged and
    registered; the report names it module:qualname."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from hugechunk import HugeChunkProvider

    from netmem.replay import Config, run
    r = run(Config(provider=HugeChunkProvider, provider_args={"size": 32 << 20},
                   connections=4, payload=64 << 10))
    assert r.exit_code == 0, r.doc["validation"]
    assert r.doc["config"]["provider"] == "hugechunk:HugeChunkProvider"
    assert r.doc["validation"]["result"] == "ok" and r.doc["devmem"]["dmabuf-frags"] > 0
    jsonschema.validate(r.doc, REPORT_SCHEMA)


def test_list_providers_shows_installed_ones(plugin_dir, tmp_path):
    proc = replay_subprocess(plugin_dir, tmp_path, "--list-providers")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert {"host", "dmabuf", "p2pdma", "hugechunk", "gone"} <= set(lines)
    assert lines["hugechunk"].split(None, 2) == [
        "hugechunk", "hugechunk:HugeChunkProvider",
        "4 KiB net_iovs over huge chunks of host memory, DMA-mapped once for the NIC."]
    assert lines["dmabuf"].split()[1] == "netmem.providers.dmabuf:DmabufDevmemProvider"
    assert "cannot load: ModuleNotFoundError" in lines["gone"]


# ---- --provider-arg -----------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "key", "value"), [
    ("chunk=2MiB", "chunk", 2 << 20), ("n=7", "n", 7), ("addr=0x200000", "addr", 0x200000),
    ("ratio=0.5", "ratio", 0.5), ("mode=fast", "mode", "fast"), ("x=", "x", ""),
    ("eq=a=b", "eq", "a=b"), ("size=4KiB", "size", 4096), ("v=nan", "v", "nan"),
    ("v=-inf", "v", "-inf")])
def test_provider_arg_values(text, key, value):
    from netmem.replay.config import _provider_arg

    assert _provider_arg(text) == (key, value)
    assert type(_provider_arg(text)[1]) is type(value)


# ---- what cannot be replayed: exit code 2, one line, nothing written ----------------------------

REFUSED = {
    "unknown name": (["--provider", "hugechunks"],
                     ("--provider hugechunks: no memory provider 'hugechunks' (registered: "
                      "dmabuf, gone, host, hugechunk, ")),
    "module gone": (["--provider", "gone"],
                    "--provider gone: cannot load it: ModuleNotFoundError"),
    "not a provider": (["--provider", "notaprovider"],
                       ("badproviders:NotAProvider is not a netmem.provider.MemoryProvider and "
                        "has no replay_setup(rig, **provider_args) classmethod")),
    "constructor without the nic": (["--provider", "oneargs"],
                                    ("OneArgInit(machine) cannot be built as cls(machine, nic, "
                                     "**provider_args)")),
    "net_iovs without memory_map": (["--provider", "nomap"],
                                    ("implement memory_map() returning (offsets, phys, "
                                     "lengths)")),
    "areas without an id": (["--provider", "noid"], "net_iov areas have owner_id 0"),
    "replay_setup returns no binding": (["--provider", "noreturn"],
                                        "not a netmem.provider.ReplayBinding"),
    "unknown provider arg": ([*HUGE, "--provider-arg", "colour=3"],
                             ("--provider-arg: the hugechunk provider takes size=67108864, "
                              "chunk=2097152: got an unexpected keyword argument 'colour'")),
    "provider arg of a built-in": (["--provider", "p2pdma", "--provider-arg", "size=1"],
                                   "the p2pdma provider takes no --provider-arg"),
    "provider refuses its arg": (["--provider", "hugechunk", "--provider-arg", "chunk=3000"],
                                 "--provider hugechunk: hugechunk: chunk 3000 is not a power"),
    "provider memory too small": (["--provider", "hugechunk", "--provider-arg", "size=8MiB"],
                                  ("--provider hugechunk: its memory, 8388608 bytes (--dmabuf-size "
                                   "for dmabuf and p2pdma), is too small for the traffic")),
    "malformed provider arg": (["--provider", "hugechunk", "--provider-arg", "2MiB"],
                               "cannot read '2MiB': KEY=VALUE"),
    "provider arg twice": ([*HUGE, "--provider-arg", "size=64MiB"], "size given twice"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unreplayable_provider_is_exit_code_2(installed, tmp_path, capsys, name):
    argv, message = REFUSED[name]
    out = tmp_path / "out"
    out.mkdir()
    assert main([*argv, *SMALL, "--json", str(out / "r.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 or err[0].startswith("usage:"), err
    assert message in err[-1], err
    assert os.listdir(out) == []


def test_replay_binding_refuses_a_bad_map():
    one = np.zeros(1, np.uint64)
    with pytest.raises(NetmemError, match="three uint64 arrays of one length") as e:
        ReplayBinding((one, one), 1)
    assert e.value.errno == 22
    with pytest.raises(NetmemError, match="three uint64 arrays"):
        ReplayBinding((one, one, np.zeros(1, np.int64)), 1)
    with pytest.raises(NetmemError, match="dmabuf_id 0 is not an id from 1"):
        ReplayBinding((one, one, one), 0)
    assert ReplayBinding((one, one, one + 4096), 3).size == 4096
    assert ReplayBinding().size == 0


def test_builtins_bind_through_their_replay_setup():
    """host, dmabuf and p2pdma are registered like any provider and bind themselves."""
    from netmem.provider import MemoryProvider, get_provider

    for name in ("host", "dmabuf", "p2pdma"):
        cls = get_provider(name)
        assert "replay_setup" in vars(cls), name                # its own, not the default
        assert issubclass(cls, MemoryProvider)
    assert get_provider("host").is_host


class TestHugeChunkConformance(ProviderConformance):
    """The example provider keeps the page_pool contract (netmem.testing's suite)."""

    @pytest.fixture(autouse=True)
    def _importable(self, installed):
        """hugechunk is imported from where pip installed it."""

    def make_provider(self, machine, nic):
        from hugechunk import HugeChunkProvider

        return HugeChunkProvider(machine, nic, size=8 << 20, chunk=1 << 20)

    def assert_provider_whole(self, provider):
        assert sorted(provider.free) == provider.area.niovs.tolist()

    def free_provider(self, provider):
        provider.close()
