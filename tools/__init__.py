"""Command-line programs of netmem, installed as ``netmem.tools``, and what their parsers
share: ``size_arg``, the argparse type of byte counts (``65536``, ``4MiB``), which
``netmem-flows`` and ``netmem-replay`` both take."""
import argparse
import re

__all__ = ["size_arg"]

_UNITS = {"": 1, "K": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MIB": 1 << 20, "G": 1 << 30,
          "GIB": 1 << 30}


def size_arg(text):
    """A byte count with an optional binary unit (K, KiB, M, MiB, G, GiB; case does not
    matter): ``"4MiB"`` -> 4194304. ``argparse.ArgumentTypeError`` for anything else."""
    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise argparse.ArgumentTypeError(f"cannot read size {text!r} (use e.g. 65536 or 4MiB)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]
