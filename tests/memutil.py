"""Helpers of the tests of memory layout: the mapping (``/proc/self/smaps``) that holds an
address, to check how an arena was mapped and advised."""
import os

import numpy as np

# madvise(MADV_HUGEPAGE) is refused (EINVAL) by a kernel built without transparent huge pages
THP = os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled")


def vma_of(addr):
    """(permissions, set of ``VmFlags``) of the mapping that holds ``addr`` (an int, or a
    buffer: its first byte)."""
    if not isinstance(addr, int):
        addr = np.frombuffer(addr, np.uint8).ctypes.data
    with open("/proc/self/smaps") as f:
        found = None
        for line in f:
            head = line.split()
            if "-" in head[0] and ":" not in head[0]:
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                found = head[1] if lo <= addr < hi else None
            elif found is not None and head[0] == "VmFlags:":
                return found, set(head[1:])
    raise LookupError(f"no mapping holds {addr:#x}")
