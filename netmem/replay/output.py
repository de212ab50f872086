"""The files netmem-replay writes: every output checked writable before the run starts (so
nothing is written on bad input), and each written through a temporary file renamed once
complete.
"""
import errno
import importlib.util
import os
import tempfile

from netmem.replay.config import BadInput
from netmem.tools import unwritable_dir


def _check_outputs(cfg):
    """Every output must be writable before the run starts: nothing is written on bad input."""
    for opt, path in (("--json", cfg.json), ("--plot", cfg.plot), ("--trace-out", cfg.trace_out)):
        if path is not None:
            _check_output(opt, path)
    if cfg.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise BadInput("--plot needs matplotlib (pip install 'netmem[plot]')", errno.ENOENT)
    if cfg.dump_streams is not None:
        d = cfg.dump_streams
        if os.path.exists(d) and not os.path.isdir(d):
            raise BadInput(f"--dump-streams {d}: exists and is not a directory", errno.ENOTDIR)
        # Report.write_streams(): a new directory beside it, its files moved into it
        _check_writable_dir("--dump-streams", d, os.path.dirname(os.path.abspath(d)))
        if os.path.isdir(d):
            _check_writable_dir("--dump-streams", d, d)


def _check_writable_dir(opt, path, d):
    """BadInput naming ``opt`` unless this process may create files in directory ``d``."""
    why = unwritable_dir(d)
    if why is not None:
        raise BadInput(f"{opt} {path}: {why[1]}", why[0])


def _check_output(opt, path):
    """``path`` of option ``opt`` can be written (BadInput otherwise)."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise BadInput(f"{opt} {path}: is a directory", errno.EISDIR)
    if os.path.exists(path) and not os.path.isfile(path):      # a device or a pipe
        if not os.access(path, os.W_OK):
            raise BadInput(f"{opt} {path}: cannot write it", errno.EACCES)
    else:
        _check_writable_dir(opt, path, parent)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_atomic(path, write):
    """``write(f)`` into a temporary file beside ``path`` (binary), renamed to ``path`` once
    complete, with the permissions a new file gets. A ``path`` that exists and is no regular
    file (``/dev/stdout``, a pipe) is written in place: a rename would replace the device."""
    if os.path.exists(path) and not os.path.isfile(path):
        with open(path, "wb") as f:
            write(f)
        return
    fd, tmp = tempfile.mkstemp(prefix=".netmem-replay-", dir=os.path.dirname(
        os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
