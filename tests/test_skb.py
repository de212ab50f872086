"""skbs: frags, readability, coalescing, cloning and freeing (net/core/skbuff.c rules)."""
import pytest
from test_provider import MP_FLAGS, FreelistProvider

from netmem import NetmemError
from netmem.dma import Device
from netmem.skb import MAX_SKB_FRAGS, napi_alloc_skb, napi_build_skb, skb_try_coalesce


def _niov_pool(machine, make_pool):
    return make_pool(provider=FreelistProvider(machine, 4), flags=MP_FLAGS,
                     dev=Device(machine), max_len=4096)


@pytest.fixture
def pool(make_pool):
    return make_pool(pool_size=256)


def _skb_with_frags(m, pool, n, size=100, recycle=True):
    skb = napi_alloc_skb(m)
    for _ in range(n):
        ref, off = pool.alloc_frag(512)
        skb.add_rx_frag(ref, off, size, 512)
    if recycle:
        skb.mark_for_recycle()
    return skb


def _head_frag_skb(m, pool, headlen=50):
    """napi_build_skb() over a 1024-byte pool frag, ``headlen`` bytes in the head; returns the
    skb and the head's netmem."""
    ref, off = pool.alloc_frag(1024)
    skb = napi_build_skb(m, ref, off, 1024)
    skb.put(b"x" * headlen)
    return skb, ref


def test_add_rx_frag_counts_len_and_truesize(machine, pool):
    skb = _skb_with_frags(machine, pool, 3)
    i = skb.info()
    assert (i["len"], i["data_len"], i["headlen"]) == (300, 300, 0)
    assert i["truesize"] == 256 + 256 + 320 + 3 * 512      # SKB_TRUESIZE(256) + frags
    assert skb.frags_readable
    skb.free()


def test_kfree_skb_returns_pp_frags_through_napi_pp_put_page(machine, pool):
    skb = _skb_with_frags(machine, pool, 4, size=512)
    pool._free_frag()
    skb.free()
    assert pool.stats["recycle_ring"] == 1              # one page, four frags, last put


def test_net_iov_frag_makes_skb_unreadable_and_copy_bits_faults(machine, make_pool):
    pool = _niov_pool(machine, make_pool)
    skb = napi_alloc_skb(machine)
    skb.put(b"hdr")
    niov = pool.alloc_netmem()
    skb.add_rx_frag(niov, 0, 1000, 4096)
    skb.mark_for_recycle()
    assert skb.unreadable and not skb.frags_readable
    assert skb.copy_bits(0, 3) == b"hdr"                # the head is readable
    with pytest.raises(NetmemError) as e:
        skb.copy_bits(0, 4)
    assert e.value.errno == 14
    skb.free()


def test_copy_bits_past_the_end_is_efault(machine, pool):
    skb = _skb_with_frags(machine, pool, 1, size=10)
    with pytest.raises(NetmemError) as e:
        skb.copy_bits(5, 6)
    assert e.value.errno == 14
    skb.free()


def test_try_coalesce_moves_frags(machine, pool):
    to = _skb_with_frags(machine, pool, 2)
    frm = _skb_with_frags(machine, pool, 3)
    ok, stolen, delta = skb_try_coalesce(to, frm)
    assert (ok, stolen) == (True, False)
    assert delta == 3 * 512                          # frm.truesize - SKB_TRUESIZE(end)
    assert to.info()["len"] == 500 and len(to.frags) == 5
    frm.free_partial(stolen)
    to.free()


@pytest.mark.parametrize("refusal", ["cloned", "pp_recycle", "readable", "too_many"])
def test_try_coalesce_refusals(machine, make_pool, pool, refusal):
    to = _skb_with_frags(machine, pool, 2)
    frm = _skb_with_frags(machine, pool, 1)
    extra = []
    if refusal == "pp_recycle":
        frm.free()
        frm = napi_alloc_skb(machine)               # a plain page: put_page() when freed
        frm.add_rx_frag(machine.alloc_pages(), 0, 100, 4096)
    elif refusal == "cloned":
        extra.append(to.clone())
    elif refusal == "readable":
        npool = _niov_pool(machine, make_pool)
        frm.free()
        frm = napi_alloc_skb(machine)
        frm.add_rx_frag(npool.alloc_netmem(), 0, 100, 4096)
        frm.mark_for_recycle()
    elif refusal == "too_many":
        frm.free()
        frm = _skb_with_frags(machine, pool, MAX_SKB_FRAGS - 1)
    ok, stolen, delta = skb_try_coalesce(to, frm)
    assert (ok, stolen, delta) == (False, False, 0)
    for s in [to, frm, *extra]:
        s.free()


def test_try_coalesce_into_an_skb_whose_clone_was_freed(machine, pool):
    # skb_cloned() is skb->cloned && dataref != 1: the cloned bit stays, but with the clone
    # gone the original owns its data again and skb_try_coalesce() takes frm's frags.
    to = _skb_with_frags(machine, pool, 2)
    to.clone().free()
    assert to.cloned and to.dataref == 1
    frm = _skb_with_frags(machine, pool, 3)
    ok, stolen, delta = skb_try_coalesce(to, frm)
    assert (ok, stolen, delta) == (True, False, 3 * 512)
    assert to.info()["len"] == 500 and len(to.frags) == 5
    frm.free_partial(stolen)
    to.free()


def test_try_coalesce_from_an_skb_whose_clone_was_freed(machine, pool):
    # skb_head_is_locked(from) and "if (!skb_cloned(from)) nr_frags = 0": with its clone
    # freed, frm's page-frag head is stolen and its frags move without extra pp references.
    frm, ref = _head_frag_skb(machine, pool)
    fref, foff = pool.alloc_frag(512)
    frm.add_rx_frag(fref, foff, 100, 512)
    frm.mark_for_recycle()
    frm.clone().free()
    count = machine.netmem(fref).pp_ref_count
    to = _skb_with_frags(machine, pool, 1)
    ok, stolen, _ = skb_try_coalesce(to, frm)
    assert ok and stolen
    assert [f[0] for f in to.frags[-2:]] == [ref, fref]
    assert machine.netmem(fref).pp_ref_count == count   # moved, not referenced again
    frm.free_partial(stolen)
    to.free()


def test_try_coalesce_copies_small_readable_into_tailroom(machine, pool):
    to = napi_alloc_skb(machine)
    to.put(b"a" * 10)
    frm = napi_alloc_skb(machine)
    frm.put(b"b" * 20)
    ok, stolen, delta = skb_try_coalesce(to, frm)
    assert (ok, stolen, delta) == (True, False, 0)
    assert to.copy_bits(0, 30) == b"a" * 10 + b"b" * 20
    frm.free_partial(stolen)
    to.free()


def test_try_coalesce_steals_a_page_frag_head(machine, pool):
    frm, ref = _head_frag_skb(machine, pool)
    frm.mark_for_recycle()
    to = _skb_with_frags(machine, pool, 1)
    ok, stolen, _ = skb_try_coalesce(to, frm)
    assert ok and stolen
    assert to.frags[-1][0] == ref and to.frags[-1][2] == 50
    frm.free_partial(stolen)
    to.free()


def test_clone_shares_data_until_both_are_freed(machine, pool):
    skb = _skb_with_frags(machine, pool, 2, size=512)
    pool._free_frag()
    c = skb.clone()
    assert skb.cloned and c.cloned and skb.dataref == 2
    skb.free()
    assert c.dataref == 1 and pool.stats["recycle_ring"] == 0
    c.free()
    assert pool.stats["recycle_ring"] == 1


def test_pp_frag_ref(machine, pool):
    skb = _skb_with_frags(machine, pool, 1, recycle=False)
    with pytest.raises(NetmemError) as e:
        skb.pp_frag_ref()
    assert e.value.errno == 22
    skb.mark_for_recycle()
    ref = skb.frags[0][0]
    count = machine.netmem(ref).pp_ref_count
    skb.pp_frag_ref()
    assert machine.netmem(ref).pp_ref_count == count + 1
    skb.free()
    pool.put_netmem(ref)                                # the extra reference
