"""Network devices and NAPI.

For now: ``Napi``, the NAPI instance a page_pool may be tied to for lockless direct recycling
(``PagePoolParams(napi=...)``); its ``list_owner`` is the CPU that polls it. NetDevice, RX queues
and the queue management ops extend this module.
"""
from netmem import _core

__all__ = ["Napi"]


class Napi(_core.CoreNapi):
    """Models the parts of ``struct napi_struct`` a page_pool reads: ``list_owner`` (the CPU
    running its poll) and ``napi_id`` (from MIN_NAPI_ID, as ``napi_hash_add()`` gives them)."""

    def __new__(cls, machine, cpu=0):
        return super().__new__(cls, machine, cpu, machine._alloc_napi_id())

    def __init__(self, machine, cpu=0):
        pass

    def __repr__(self):
        return f"<Napi {self.napi_id} on CPU {self.list_owner}>"
