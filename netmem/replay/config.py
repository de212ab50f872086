"""netmem-replay's configuration: ``Config``, the options one for one, and the checks that
refuse an absurd one before anything is built (``BadInput``, exit code 2); the provider, resolved
from the ``netmem.providers`` entry points (or given as a class from Python); the values of
``--bind-queues`` and ``--provider-arg`` read from text; the constants they are checked against.
A new option is a field of ``Config`` here, its check in ``_check_config()`` and its flag in
``cli._parser()``.
"""
import argparse
import dataclasses
import errno
import functools
import math

from netmem.errors import NetmemError
from netmem.flows import FlowParams
from netmem.netdev import ETH_MAX_MTU, ETH_MIN_MTU, RX_MAX_PENDING
from netmem.page_pool import PAGE_SIZE
from netmem.provider import get_provider, replay_args
from netmem.tools import size_arg

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED = 130          # 128 + SIGINT, as a shell reports a command killed by Ctrl-C
MAX_QUEUES = 64                 # the model driver's queue limit (NetDevice)
ETH_DATA_LEN = 1500             # include/uapi/linux/if_ether.h: Ethernet's MTU (ether_setup())
MAX_CPUS = 64                   # NM_MAX_CPUS
NAPI_POLL_WEIGHT = 64           # the smallest chunk worth a drain: one NAPI budget
# Frames per receive() call before the application drains, at Ethernet's MTU: it reads about as
# often as an application woken per NAPI round would. Bursts of 8192 frames overflow a
# 1024-entry ptr_ring (40% of the default workload's buffers then go back to the page
# allocator). At a larger MTU the chunk carries the same bytes (``default_chunk()``): 1024
# jumbo frames, 9 MB, would overflow a socket's 6 MiB receive buffer between two drains.
DEFAULT_CHUNK = 1024
DMABUF_SIZE = 64 << 20          # --dmabuf-size per 4 KiB of --rx-buf-size, when not given
# The application's recvmsg() buffer (ncdevmem reads 1 MiB at a time too): for devmem, the bytes
# described per call; the pattern check compares this much at once.
RECV_BUF = 1 << 20
# ncdevmem's control buffer, CMSG_SPACE(sizeof(struct iovec) * 10000): 4000 cmsgs of
# CMSG_SPACE(sizeof(struct dmabuf_cmsg)) = 40 bytes.
DEVMEM_ANCBUF = 16 + 16 * 10000
DEVMEM_CMSGS = DEVMEM_ANCBUF // 40
DEFAULT_WORKLOAD = FlowParams(connections=64, family="both", payload=1 << 16, validate=7,
                              loss=0.001, reorder=0.001, duplicate=0.001, overlap=0.0005)



def default_chunk(mtu):
    """The chunk that carries ``DEFAULT_CHUNK`` frames' worth of bytes at ``mtu``: 1024 frames
    at 1500, 170 at 9000 (at least one NAPI budget)."""
    return max(NAPI_POLL_WEIGHT, DEFAULT_CHUNK * ETH_DATA_LEN // max(mtu, ETH_DATA_LEN))

class BadInput(NetmemError):
    """An option or input file netmem-replay cannot use (exit code 2)."""

    def __init__(self, msg, code=errno.EINVAL):
        super().__init__(code, msg)


# --------------------------------------------------------------------------------------------
# Configuration.


@dataclasses.dataclass
class Config:
    """What ``run()`` does; the command-line options one for one but ``--compare`` and
    ``--csv``, which compare reports instead (``None``: the default that depends on other
    options). ``runs`` repeats the timed part, each time on a fresh machine after its own
    ``warmup`` loops. ``connections``/``payload`` shape the built-in workload;
    ``validate`` is its ncdevmem pattern (``DEFAULT_WORKLOAD``'s unless given; 0: random
    bytes), or the pattern a ``pcap`` carries; ``header_split`` defaults to on for the devmem
    providers (which need it) and off for host pages; ``chunk`` is frames per receive call
    before the application drains (None: ``default_chunk(mtu)``; smaller with a dma-buf that
    cannot hold a whole chunk);
    ``pcap_in_memory`` reads the capture whole instead of streaming it from the file;
    ``pcap_keep`` bytes at the head of a streamed capture stay resident across loops;
    ``mtu`` None fits the NIC to a ``pcap``'s largest frame (``_choose_mtu()``) and is
    ``ETH_DATA_LEN`` for the built-in workload; ``progress`` None shows the progress bar when
    stderr is a terminal; ``provider_args`` the keywords of the provider's ``replay_setup``
    (``--provider-arg KEY=VALUE``); ``rx_buf_size`` is bind-rx's ``rx-buf-size`` for the
    dmabuf provider (None: not given, 4 KiB net_iovs), which makes the NIC bnxt-like (buffers
    up to ``BNXT_MAX_RX_PAGE_SIZE``); ``dmabuf_size`` None is ``DMABUF_SIZE`` (64 MiB) per 4 KiB
    of buffer, so the pools' worst case fits whatever the buffer size (``default_dmabuf_size()``).
    From Python, ``provider`` may also be the provider's class itself, registered or not: a
    provider being written replays before it is packaged."""

    provider: str = "dmabuf"
    provider_args: dict = dataclasses.field(default_factory=dict)
    pcap: str | None = None
    pcap_in_memory: bool = False
    pcap_keep: int = 0
    connections: int | None = None
    payload: int | None = None
    validate: int | None = None
    queues: int = 2
    bind_queues: list | None = None
    header_split: str | None = None
    mtu: int | None = None
    iommu: str = "none"
    app_cpu: str = "other"
    pool_size: int = 1024
    dmabuf_size: int | None = None
    dmabuf_layout: str = "contiguous"
    rx_buf_size: int | None = None
    loops: int = 1
    warmup: int = 0
    runs: int = 1
    chunk: int | None = None
    dump_streams: str | None = None
    json: str | None = None
    plot: str | None = None
    trace_out: str | None = None
    seed: int = 0
    progress: bool | None = None
    profile: bool = False
    closed_loop: bool = False
    link_gbps: float | None = None
    rtt: float | None = None
    loss: float | None = None
    cc: str | None = None
    hold_tokens: float | None = None

    @property
    def provider_name(self):
        """The provider as messages and the report name it: the registered name, or a class's
        ``module:qualname``."""
        return _qualname(self.provider) if isinstance(self.provider, type) else self.provider


def _check_config(cfg):
    """Refuse absurd options before anything is built (BadInput names the option). Returns
    the provider's class."""
    cls = _provider_class(cfg.provider, cfg.provider_args)
    binds = _binds(cls)
    if not 1 <= cfg.queues <= MAX_QUEUES:
        raise BadInput(f"--queues {cfg.queues}: a NIC has 1..{MAX_QUEUES} RX queues")
    if cfg.bind_queues is not None:
        if not binds:
            raise BadInput(f"--bind-queues: the {cfg.provider_name} provider binds no queues")
        if not cfg.bind_queues:
            raise BadInput("--bind-queues: no queue given")
        bad = [q for q in cfg.bind_queues if not 0 <= q < cfg.queues]
        if bad:
            raise BadInput(f"--bind-queues: queue {bad[0]} does not exist (the NIC has queues "
                           f"0..{cfg.queues - 1}, --queues {cfg.queues})", errno.ERANGE)
        if len(set(cfg.bind_queues)) != len(cfg.bind_queues):
            raise BadInput("--bind-queues: a queue is listed twice")
    if cfg.header_split not in (None, "on", "off"):
        raise BadInput(f"--header-split {cfg.header_split}: on or off")
    if binds and cfg.header_split == "off":
        raise BadInput(f"--header-split off: the {cfg.provider_name} provider needs header split "
                       "(netif_mp_open_rxq() refuses a queue without tcp-data-split)")
    if cfg.mtu is not None and not ETH_MIN_MTU <= cfg.mtu <= ETH_MAX_MTU:
        raise BadInput(f"--mtu {cfg.mtu}: the NIC takes {ETH_MIN_MTU}..{ETH_MAX_MTU}")
    if cfg.iommu not in ("none", "passthrough", "dma-iommu"):
        raise BadInput(f"--iommu {cfg.iommu}: none, passthrough or dma-iommu")
    if cfg.app_cpu not in ("same", "other"):
        raise BadInput(f"--app-cpu {cfg.app_cpu}: same or other")
    if cfg.app_cpu == "other" and cfg.queues + 1 > MAX_CPUS:
        raise BadInput(f"--app-cpu other with {cfg.queues} queues: every queue has its own "
                       f"CPU and the application one more, and a machine has at most "
                       f"{MAX_CPUS} CPUs")
    if not 1 <= cfg.pool_size <= RX_MAX_PENDING:
        raise BadInput(f"--pool-size {cfg.pool_size}: the RX ring (and its page pool) holds "
                       f"1..{RX_MAX_PENDING} buffers")
    if cfg.dmabuf_size is not None and (cfg.dmabuf_size <= 0 or cfg.dmabuf_size % PAGE_SIZE):
        raise BadInput(f"--dmabuf-size {cfg.dmabuf_size}: a nonzero multiple of {PAGE_SIZE}")
    _check_rx_buf_size(cfg, cls)
    if cfg.dmabuf_layout not in ("contiguous", "pages", "random"):
        raise BadInput(f"--dmabuf-layout {cfg.dmabuf_layout}: contiguous, pages or random")
    for name in ("loops", "runs", "chunk"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise BadInput(f"--{name} {getattr(cfg, name)}: at least 1")
    if cfg.warmup < 0:
        raise BadInput(f"--warmup {cfg.warmup}: at least 0")
    if cfg.seed < 0:
        raise BadInput(f"--seed {cfg.seed}: at least 0")
    if cfg.validate is not None and cfg.validate != 0 and cfg.validate < 2:
        raise BadInput(f"--validate {cfg.validate}: ncdevmem's -v takes 2 or more (0: none)")
    if cfg.pcap is not None and (cfg.connections is not None or cfg.payload is not None):
        raise BadInput("--connections and --payload shape the built-in workload, not --pcap")
    if cfg.pcap_in_memory and cfg.pcap is None:
        raise BadInput("--pcap-in-memory reads a --pcap capture whole: there is no --pcap")
    if cfg.pcap_keep < 0:
        raise BadInput(f"--pcap-keep {cfg.pcap_keep}: at least 0")
    if cfg.pcap_keep and (cfg.pcap is None or cfg.pcap_in_memory):
        raise BadInput("--pcap-keep keeps the head of a streamed --pcap capture: there is "
                       "none (no --pcap, or --pcap-in-memory)")
    _check_closed_loop(cfg)
    return cls


#: ``--closed-loop``'s options when not given.
CLOSED_LOOP_DEFAULTS = {"connections": 16, "payload": 4 << 20, "link_gbps": 100.0,
                        "rtt": 100e-6, "loss": 0.0, "cc": "cubic", "hold_tokens": 0.0,
                        "validate": 7}
_CLOSED_LOOP_ONLY = ("link_gbps", "rtt", "loss", "cc", "hold_tokens")


def _check_closed_loop(cfg):
    """``--closed-loop`` and its options: none of them without it, no trace with it, each
    in range."""
    if not cfg.closed_loop:
        given = [n for n in _CLOSED_LOOP_ONLY if getattr(cfg, n) is not None]
        if given:
            raise BadInput(f"--{given[0].replace('_', '-')}: only with --closed-loop")
        return
    for name, why in (("pcap", "a trace"), ("dump_streams", "stream files"),
                      ("trace_out", "the trace-out tracepoints"), ("profile", "--profile")):
        if getattr(cfg, name):
            raise BadInput(f"--closed-loop: --{name.replace('_', '-')} is not supported with "
                           f"it ({why} of the open-loop replay)")
    if cfg.loops != 1 or cfg.warmup or cfg.runs != 1:
        raise BadInput("--closed-loop: one run of one loop (--loops, --warmup, --runs)")
    if cfg.connections is not None and not 1 <= cfg.connections <= 1 << 16:
        raise BadInput(f"--connections {cfg.connections}: 1..65536 in the closed loop")
    if cfg.payload is not None and not 0 <= cfg.payload < 1 << 31:
        raise BadInput(f"--payload {cfg.payload}: below 2 GiB in the closed loop")
    if cfg.link_gbps is not None and not 0 < cfg.link_gbps <= 1e4:
        raise BadInput(f"--link-gbps {cfg.link_gbps}: in (0, 10000]")
    if cfg.rtt is not None and not 0 <= cfg.rtt <= 10:
        raise BadInput(f"--rtt {cfg.rtt}: 0 to 10 s")
    if cfg.loss is not None and not 0 <= cfg.loss < 1:
        raise BadInput(f"--loss {cfg.loss}: a probability below 1")
    if cfg.cc is not None and cfg.cc not in ("reno", "cubic"):
        raise BadInput(f"--cc {cfg.cc}: reno or cubic")
    if cfg.hold_tokens is not None and not 0 <= cfg.hold_tokens <= 60:
        raise BadInput(f"--hold-tokens {cfg.hold_tokens}: 0 to 60 s")
    if cfg.validate == 0:
        raise BadInput("--closed-loop: the senders send ncdevmem's pattern (--validate 2 or "
                       "more)")
    if cfg.mtu is not None and cfg.mtu > ETH_DATA_LEN:
        raise BadInput(f"--mtu {cfg.mtu}: the closed loop's frames are at most {ETH_DATA_LEN}")


def time_arg(text):
    """``100us``, ``1.5ms``, ``2s``, ``500ns`` or seconds -> seconds (argparse type)."""
    for suffix, scale in (("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):
        if text.endswith(suffix):
            text, unit = text[:-len(suffix)], scale
            break
    else:
        unit = 1.0
    try:
        value = float(text) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot read time {text!r} (use e.g. 100us, 1ms)") \
            from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"time {text!r} is not finite")
    return value


def _check_rx_buf_size(cfg, cls):
    """``--rx-buf-size`` (``--rx-buf-len``): bind-rx's rx-buf-size for dmabuf, the ifq's
    ``rx_buf_len`` for zcrx, so theirs only, and what ``netdev_nl_bind_rx_doit()`` takes (a
    power of 2 of at least PAGE_SIZE, EINVAL)."""
    size = cfg.rx_buf_size
    if size is None:
        return
    if getattr(cls, "name", None) not in ("dmabuf", "zcrx"):
        raise BadInput(f"--rx-buf-size: the net_iov size of the dmabuf and zcrx providers "
                       f"only (not {cfg.provider_name})")
    if size < PAGE_SIZE or size & (size - 1):
        raise BadInput(f"--rx-buf-size {size}: rx_buf_size must be a power of 2 >= page size "
                       f"({PAGE_SIZE})")


def default_dmabuf_size(rx_buf_size):
    """``--dmabuf-size`` when not given: ``DMABUF_SIZE`` per 4 KiB of buffer (64 MiB for
    4 KiB net_iovs, 256 MiB for 16 KiB ones)."""
    return DMABUF_SIZE * ((rx_buf_size or PAGE_SIZE) // PAGE_SIZE)


def _provider_class(provider, args):
    """The class registered as ``--provider provider``, read from the entry points now (or
    ``provider`` itself, a class given from Python), whose ``replay_setup`` takes ``args``.
    BadInput when none is, it does not load, it has no ``replay_setup``, or the args do not
    fit it."""
    name = _qualname(provider) if isinstance(provider, type) else provider
    try:
        cls = provider if isinstance(provider, type) else get_provider(provider)
    except NetmemError as e:
        raise BadInput(f"--provider {name}: {e.strerror}; see --list-providers", e.errno) \
            from None
    except Exception as e:          # the provider's own module failed to import
        raise BadInput(f"--provider {name}: cannot load it: {type(e).__name__}: {e}",
                       errno.ENOENT) from None
    if not callable(getattr(cls, "replay_setup", None)):
        raise BadInput(f"--provider {name}: {_qualname(cls)} is not a netmem.provider."
                       "MemoryProvider and has no replay_setup(rig, **provider_args) "
                       "classmethod: subclass MemoryProvider or implement replay_setup",
                       errno.EOPNOTSUPP)
    sig = replay_args(cls)
    if sig is not None:
        try:
            sig.bind(**args)
        except TypeError as e:
            raise BadInput(f"--provider-arg: the {name} provider takes {_arg_list(sig)}: {e}") \
                from None
    return cls


def _binds(cls):
    """Whether the provider binds queues (header split, ``--bind-queues``, MSG_SOCK_DEVMEM):
    every one but the host-pages path."""
    return not getattr(cls, "is_host", False)


def _qualname(obj):
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def _arg_list(sig):
    return ", ".join(str(p) for p in sig.parameters.values()) or "no --provider-arg"


# --------------------------------------------------------------------------------------------
# Option values read from text (argparse types).


def _queue_list(text):
    """``0,2-3`` -> [0, 2, 3]."""
    out = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot read queue list {text!r} (use e.g. 0,2-3)") \
            from None
    return out


def _provider_arg(text):
    """``KEY=VALUE`` -> (key, value): the value an int (``4096``, ``0x200000``), a finite
    float, a size (``16MiB``), else the string (``nan`` stays one: JSON has no NaN)."""
    key, eq, value = text.partition("=")
    if not eq or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"cannot read {text!r}: KEY=VALUE, KEY a Python "
                                         "identifier")
    for parse in (int, functools.partial(int, base=0), _finite_float, size_arg):
        parsed = _parsed(parse, value)
        if parsed is not None:
            return key, parsed
    return key, value


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _parsed(parse, text):
    try:
        return parse(text)
    except (ValueError, argparse.ArgumentTypeError):
        return None
