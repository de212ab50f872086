"""Command-line programs of netmem, installed as ``netmem.tools``, and what ``netmem-flows``
and ``netmem-replay`` share: ``Parser``, whose errors are one line and exit code 2;
``size_arg``, the argparse type of byte counts (``65536``, ``4MiB``); ``unwritable_dir``, the
check of a directory an output goes into."""
import argparse
import errno
import os
import re

__all__ = ["Parser", "size_arg", "unwritable_dir"]


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr, ``PROG: MESSAGE``, and exit
    code 2 (bad input), as the tools report every other bad input (``--help`` has the usage)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message}\n")


def unwritable_dir(d):
    """Why this process cannot create files in directory ``d``, as ``(errno, reason)``, or
    None when it can (``access(2)``: root passes where only permission bits stop others; a
    path through a regular file or a read-only file system stops everyone)."""
    if not os.path.isdir(d):
        up = d
        while not os.path.exists(up):
            up = os.path.dirname(up)
        if not os.path.isdir(up):
            return errno.ENOTDIR, f"{up} is not a directory"
        return errno.ENOENT, f"{d} does not exist"
    if not os.access(d, os.W_OK | os.X_OK):
        return errno.EACCES, f"cannot write in {d}"
    return None

_UNITS = {"": 1, "K": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MIB": 1 << 20, "G": 1 << 30,
          "GIB": 1 << 30}


def size_arg(text):
    """A byte count with an optional binary unit (K, KiB, M, MiB, G, GiB; case does not
    matter): ``"4MiB"`` -> 4194304. ``argparse.ArgumentTypeError`` for anything else."""
    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise argparse.ArgumentTypeError(f"cannot read size {text!r} (use e.g. 65536 or 4MiB)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]
