# cython: language_level=3
# Declarations of the data plane (C structs and cdef classes of netmem._core).
#
# Cython finds a module's .pxd by its dotted name, so this file lives in the package while the
# implementation is pyx/_core.pyx and the .pxi parts it includes.

from cpython.ref cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

ctypedef uint64_t netmem_ref

# One descriptor per buffer, shared by struct page and struct net_iov as in the kernel, where the
# fields a page_pool touches sit at the same offsets in both (64 bytes, as struct page).
cdef struct nm_desc:
    uint64_t pp_magic           # PP_SIGNATURE | dma index << PP_DMA_INDEX_SHIFT while pool-owned
    void *pp                    # owning nm_pool, or NULL
    uint64_t dma_addr
    int64_t pp_ref_count        # atomic_long_t pp_ref_count
    int32_t refcount            # page _refcount (a net_iov always reads 1)
    uint32_t owner              # net_iov: area id; tail page: head pfn
    uint32_t next               # buddy free-list links (pfn); NM_NIL at the ends
    uint32_t prev
    # Model ownership state (NM_ST_*), not in the kernel. Not a char type, so that its stores on
    # the fast path do not alias (and force reloads of) the pool's fields.
    uint32_t state
    uint8_t order               # buddy block / compound order
    uint8_t nid
    uint8_t flags               # NM_PG_* bits
    uint8_t _pad8
    uint64_t _pad               # 64 bytes, as struct page: a descriptor is one cache line

cdef struct nm_node:
    uint64_t start_pfn
    uint64_t end_pfn
    uint64_t managed_pages
    uint32_t free_head[11]
    uint32_t free_tail[11]
    uint64_t nr_free[11]

cdef struct pp_alloc_stats:
    uint64_t fast
    uint64_t slow
    uint64_t slow_high_order
    uint64_t empty
    uint64_t refill
    uint64_t waive

cdef struct pp_recycle_stats:
    uint64_t cached
    uint64_t cache_full
    uint64_t ring
    uint64_t ring_full
    uint64_t released_refcnt

cdef struct nm_trace_rec:
    uint64_t ts_ns
    uint32_t type
    uint32_t pool_id
    int32_t cpu                 # the CPU it ran on (m.cpu)
    int32_t queue               # the RX queue whose NAPI poll it ran in, or -1
    netmem_ref netmem
    int64_t a
    int64_t b
    int64_t c

cdef struct nm_warn_rec:
    int code
    uint32_t pool_id
    netmem_ref netmem
    int64_t val

cdef struct nm_machine
cdef struct nm_net

cdef struct nm_device:
    nm_machine *m
    uint64_t dma_mask
    uint64_t max_seg_size       # dma_set_max_seg_size(); 64 KiB without dma_parms
    uint64_t seg_boundary_mask  # dma_set_seg_boundary(); ULONG_MAX by default
    void *domain                # the device's IOMMU domain under dma-iommu, else NULL
    uint32_t id
    int coherent
    int dma_skip_sync           # starts as coherent; the first swiotlb mapping clears it
    int is_pci
    int overflow_warned         # dev_WARN_ONCE in dma_direct_map_phys()
    uint64_t nr_mapped          # live streaming mappings
    uint64_t nr_map_errors

cdef struct nm_swiotlb:
    uint64_t start              # physical address of the bounce area (low memory, contiguous)
    uint32_t nslots             # IO_TLB_SIZE (2 KiB) slots
    uint32_t used
    uint8_t *busy
    uint64_t *orig_addr         # per first slot of a mapping: the original physical address
    uint32_t *span              # per first slot: slots of the mapping
    uint64_t *mapping_size

cdef struct nm_fault:
    uint64_t ts_ns
    uint64_t addr
    uint64_t len                # bytes of the access (an unmapped access; a fault leaves it 0)
    uint32_t dev_id
    int write

# A log of device accesses (pyx/dma.pxi) not yet taken by the Python side.
cdef struct nm_dma_log:
    nm_fault *buf
    uint64_t n
    uint64_t cap
    uint64_t room               # records still kept; the counter counts past it

# Which devices may reach a range of RAM or BAR memory by its physical or bus address
# (pyx/dma.pxi): live mappings whose DMA address is the address itself (dma-direct, swiotlb slots,
# p2pdma bus addresses), and the one device that holds them all (0: several).
cdef struct nm_dma_cover:
    uint32_t count
    uint32_t dev_id

# The coverage of one region (RAM, or one BAR) in two levels, in one lazily committed mapping:
# a mapping counts once per 2 MiB-aligned 2 MiB it spans whole, and once per 4 KiB page of the
# rest, so that a 16 GiB dma-buf costs 64 KiB, not 32 MiB.
cdef struct nm_cover_table:
    nm_dma_cover *chunk         # per 2 MiB from the region's start
    nm_dma_cover *page          # per 4 KiB from the region's start

# One memory BAR in the machine's physical address map (pyx/dma.pxi): where its lazily committed
# mapping is, and which devices reach it by bus address (through a switch, no ACS redirect) rather
# than through their IOMMU.
cdef struct nm_bar:
    uint64_t start              # physical == bus address (x86)
    uint64_t end                # exclusive
    char *mem                   # the BAR's memory: a lazily committed mapping of end - start bytes
    nm_cover_table cover
    uint64_t *bus_route         # bitmap by device id: the device's accesses bypass its IOMMU
    uint32_t bus_route_words
    uint32_t dev_id             # the endpoint that owns the BAR
    int bar                     # its BAR number (0..5)

cdef struct nm_dma_stats:
    uint64_t maps
    uint64_t unmaps
    uint64_t iotlb_syncs
    uint64_t fq_flushes
    uint64_t rcache_hits
    uint64_t rcache_misses
    uint64_t bounces
    uint64_t faults
    uint64_t unmapped_accesses  # model-only: device accesses no live mapping covers

# struct net_iov_area, as the data plane needs it (an area's niovs are one run of the niov table).
# ``owner_id`` is what a devmem cmsg names as ``dmabuf_id``: the binding (or provider) id.
cdef struct nm_area:
    uint64_t niov_base          # global index of the area's first net_iov
    uint64_t num_niovs
    uint64_t base_virtual       # byte offset of the area in its dma-buf (or resource)
    uint32_t type               # NET_IOV_DMABUF, NET_IOV_IOURING or NET_IOV_P2PDMA (ours)
    uint32_t owner_id
    uint32_t niov_shift         # log2 of each net_iov's size (a devmem binding's niov_shift)

# A struct fault_attr (lib/fault-inject.c) as debugfs fail_function sets it, for the one
# function the model lets fail: page_pool_alloc_netmems() (pyx/page_pool.pxi).
cdef struct nm_fault_attr:
    int enabled                 # page_pool_alloc_netmems is in fail_function/inject
    uint32_t interval
    uint32_t probability        # percent
    int32_t verbose
    int64_t times               # failures left; -1: no limit
    uint64_t count              # calls seen while interval > 1
    uint64_t failures           # model: failures injected
    uint32_t rng                # xorshift32 state of get_random_u32_below(100)

cdef struct nm_machine:
    nm_desc *pages
    uint64_t npages
    char *mem
    uint64_t mem_bytes
    nm_desc *niovs
    uint64_t nr_niovs
    uint64_t max_niovs
    nm_area *areas              # by area id (the niov descriptor's ``owner``); 0 is unused
    uint64_t max_areas
    int nr_nodes
    nm_node nodes[8]
    int nr_cpus
    int cpu                     # the CPU the caller runs on (m.on_cpu)
    int in_softirq
    int cpu_nid[64]
    uint64_t clock_ns
    pp_recycle_stats system_recycle_stats   # shared by PP_FLAG_SYSTEM_POOL pools
    nm_fault_attr fei           # fail_function on page_pool_alloc_netmems()
    uint32_t trace_mask
    nm_trace_rec *trace_buf     # trace_cap records, allocated when a tracepoint is enabled
    uint64_t trace_n
    uint64_t trace_cap          # the ring's size, in records
    uint64_t trace_dropped      # records lost to a full ring
    uint64_t trace_ts           # while a NAPI poll traces: its frame's arrival; else 0 (clock)
    int32_t trace_queue         # while a NAPI poll traces: its queue; else -1
    nm_warn_rec warn[64]
    uint32_t nr_warn
    uint64_t nr_warn_lost
    int iommu_mode              # NM_IOMMU_NONE, NM_IOMMU_PASSTHROUGH, NM_IOMMU_DMA
    nm_swiotlb swiotlb
    nm_dma_stats dma_stats
    nm_dma_log faults
    nm_dma_log unmapped         # accesses by physical or bus address that no mapping covers
    nm_cover_table ram_cover
    nm_net *net                 # the RX stack (skbs, sockets, MIBs): pyx/skb.pxi, tcp_rx.pxi
    # PCI BAR memory (pyx/dma.pxi): every memory BAR, sorted by address, for device access in C.
    nm_bar *bars
    uint32_t nr_bars
    uint32_t bars_cap

cdef struct nm_napi:
    int list_owner              # CPU that owns the NAPI instance's poll list
    uint32_t napi_id

cdef struct ptr_ring:
    int producer
    int consumer_head
    int consumer_tail
    int size
    int batch
    netmem_ref *queue

cdef struct nm_pool

ctypedef netmem_ref (*mp_alloc_fn)(nm_pool *pool) noexcept nogil
ctypedef bint (*mp_release_fn)(nm_pool *pool, netmem_ref netmem) noexcept nogil

# The C-level fast variant of struct memory_provider_ops (the two ops the data plane calls).
cdef struct nm_mp_ops:
    mp_alloc_fn alloc_netmems
    mp_release_fn release_netmem

cdef struct nm_pool:
    # Hot, alloc side: read by every alloc (softirq only, no lock).
    uint32_t alloc_count
    uint32_t pages_state_hold_cnt
    uint32_t alloc_cache_limit  # PP_ALLOC_CACHE_SIZE; 0 once destroy has emptied the cache
    nm_desc *pages              # the machine's descriptor tables, one load closer
    nm_desc *niovs
    nm_machine *m
    pp_recycle_stats *recycle_stats
    pp_alloc_stats alloc_stats
    netmem_ref alloc_cache[128]
    # Recycle side.
    ptr_ring ring
    # Frag group.
    int64_t frag_users
    netmem_ref frag_page
    uint32_t frag_offset
    # Params (pool->p and pool->slow).
    uint32_t order
    uint32_t pool_size
    int nid
    nm_device *dev
    nm_napi *napi
    int dma_dir
    uint32_t max_len
    uint32_t offset
    uint32_t flags
    int cpuid
    bint dma_map
    bint dma_sync
    bint dma_sync_for_cpu
    bint system
    # Release side.
    uint32_t pages_state_release_cnt
    uint32_t destroy_cnt
    uint32_t user_cnt
    uint32_t id
    # Memory provider.
    nm_mp_ops *mp_ops
    void *mp_priv
    PyObject *mp_py             # a Python provider (borrowed; the PagePool object holds it)
    PyObject *pyobj             # the PagePool object (borrowed; the Machine lists it)
    # pool->dma_mapped: id -> netmem, ids from 1 (XA_FLAGS_ALLOC1).
    netmem_ref *dma_mapped
    uint32_t dma_mapped_cap
    uint32_t dma_mapped_n
    uint32_t *dma_free_ids
    uint32_t dma_free_n
    pp_recycle_stats own_recycle_stats
    # The host provider's IOVA window (two-step API): one IOVA range, a slot per page.
    uint64_t win_addr
    uint32_t win_slots
    uint32_t win_free_n
    uint32_t *win_free
    uint32_t win_unsynced          # linked since the last IOTLB sync
    # Model-only DMA counters.
    uint64_t nr_dma_map
    uint64_t nr_dma_unmap
    uint64_t nr_sync_for_device
    uint64_t sync_for_device_bytes
    uint64_t nr_sync_for_cpu


cdef class CoreMachine:
    cdef nm_machine *m
    cdef object __weakref__
    # Every listed pool's id by the address of its nm_pool, never removed: a descriptor's pp
    # field is read through it, never dereferenced, so a stale pointer (a provider that forgot
    # net_mp_niov_clear_page_pool()) to a pool whose memory is freed reads its old id.
    cdef dict _pool_ids
    cdef int _check_page(self, netmem_ref netmem, str fn) except -1


cdef class CoreDevice:
    cdef nm_device dev
    cdef readonly CoreMachine machine


cdef class CoreNapi:
    cdef nm_napi napi
    cdef readonly CoreMachine machine


cdef class CorePagePool:
    cdef nm_pool *pool
    cdef readonly CoreMachine machine
    cdef object _provider
    cdef object _dev
    cdef object _napi
    cdef object _mp_error
    cdef int _check_alive(self) except -1
    cdef int _check_ref(self, netmem_ref netmem) except -1


cdef class CoreMemoryProvider:
    # A built-in provider points c_ops at its C fast variant; NULL means the Python ops.
    cdef nm_mp_ops *c_ops
    cdef void *c_priv


# ---- IOVA allocator (pyx/iova.pxi) -------------------------------------------------------------
# Models drivers/iommu/iova.c (struct iova_domain with its range tree and rcache) and the flush
# queue of drivers/iommu/dma-iommu.c. The functions over these structs are the C API of iova.pxi.

# One allocated range (struct iova with its rb_node). The tree is a red-black tree over a node
# array: links are indices, index 0 is the NIL sentinel and index 1 the anchor node.
cdef struct nm_iova:
    unsigned long pfn_lo
    unsigned long pfn_hi
    uint32_t rb_left
    uint32_t rb_right
    uint32_t rb_parent
    uint32_t rb_color           # NM_RB_RED or NM_RB_BLACK; on a free node, unused

# struct iova_magazine: the kernel overlays size and next in a union (1 KiB); kept apart here.
cdef struct nm_iova_magazine:
    unsigned long size
    nm_iova_magazine *next      # depot and free-list link
    unsigned long pfns[127]     # IOVA_MAG_SIZE

cdef struct nm_iova_cpu_rcache:
    nm_iova_magazine *loaded    # NULL until the CPU first uses this bin (then both are set)
    nm_iova_magazine *prev

cdef struct nm_iova_rcache:
    nm_iova_magazine *depot     # full magazines, a singly linked list
    uint32_t depot_size
    uint32_t work_pending       # iova_depot_work_func() is scheduled (100 ms)
    nm_iova_cpu_rcache *cpu_rcaches     # NM_MAX_CPUS of them

cdef struct nm_iova_domain:
    # rcache: what alloc_iova_fast()/free_iova_fast() touch on a hit.
    nm_iova_rcache rcaches[6]   # IOVA_RANGE_CACHE_MAX_SIZE bins: 1, 2, 4, 8, 16, 32 pages
    uint64_t rcache_hits        # alloc_iova_fast() served by a magazine
    uint64_t rcache_misses      # alloc_iova_fast() that went to the tree
    uint64_t rcache_inserts     # free_iova_fast() into a magazine
    uint64_t rcache_fallbacks   # free_iova_fast() to the tree (too big, or no magazine)
    uint64_t rcache_flushes     # alloc_iova_fast() flushed every cache and retried
    uint64_t mag_swaps          # loaded/prev swaps
    uint64_t depot_pushes
    uint64_t depot_pops
    uint64_t depot_trimmed      # magazines freed by iova_depot_trim()
    nm_iova_magazine *mag_free  # freed magazines, reused before malloc (the kmem_cache)
    uint64_t nr_magazines       # magazines allocated (in use or on mag_free)
    # The range tree (iovad->rbroot and the nodes' slab).
    nm_iova *nodes
    uint32_t root
    uint32_t cached_node        # iovad->cached_node
    uint32_t cached32_node      # iovad->cached32_node
    uint32_t free_node          # free nodes, linked through rb_right
    uint32_t nr_nodes           # node slots used so far (NIL and anchor included)
    uint32_t cap_nodes
    uint64_t nr_ranges          # ranges in the tree, the anchor excluded
    unsigned long granule
    unsigned long start_pfn
    unsigned long dma_32bit_pfn
    unsigned long max32_alloc_size
    uint64_t alloc_failures     # alloc_iova() that returned -ENOMEM
    uint64_t max32_shortcuts    # of those, refused at once by max32_alloc_size
    uint64_t alloc_retries      # second walks, from iova_find_limit()
    uint64_t warn_missing       # iova_magazine_free_pfns(): WARN_ON(!iova)

# struct iova_fq_entry, without the page-table freelist (no page tables in the model).
cdef struct nm_fq_entry:
    unsigned long iova_pfn
    unsigned long pages
    uint64_t counter            # fq_flush_start_cnt when queued

# struct iova_fq: one ring.
cdef struct nm_iova_fq:
    uint32_t head
    uint32_t tail
    uint32_t mod_mask
    nm_fq_entry *entries

# The IOTLB flush a flush queue calls (domain->ops->flush_iotlb_all); NULL for none.
ctypedef void (*nm_flush_iotlb_fn)(void *cookie) noexcept nogil

# The flush-queue half of struct iommu_dma_cookie.
cdef struct nm_fq:
    nm_iova_fq *queues          # one per CPU, or one (single)
    int ncpus
    bint single
    uint32_t fq_size
    uint64_t fq_timeout_ns
    uint64_t fq_flush_start_cnt
    uint64_t fq_flush_finish_cnt
    bint fq_timer_on
    int fq_timer_cpu            # the CPU that armed the timer (it runs there)
    uint64_t fq_timer_expires_ns
    nm_flush_iotlb_fn flush_iotlb_all
    void *flush_cookie
    uint64_t fq_flushes         # fq_flush_iotlb() calls
    uint64_t iotlb_syncs        # IOTLB flushes issued (one per fq_flush_iotlb())
    uint64_t fq_full_flushes    # of the flushes, those forced by a full ring
    uint64_t fq_timeouts        # fq_flush_timeout() runs
    uint64_t fq_queued          # queue_iova() calls
    uint64_t fq_freed           # entries freed to the allocator


cdef class CoreIovaDomain:
    cdef nm_iova_domain iovad
    cdef object _fqs            # weakref.WeakSet of the CoreFlushQueues over this domain
    cdef int _check_fast_free(self, unsigned long pfn, unsigned long size, str fn) except -1
    cdef int _check_not_held(self, unsigned long pfn, str fn) except -1


cdef class CoreFlushQueue:
    cdef nm_fq fq
    cdef readonly CoreIovaDomain domain
    cdef object __weakref__

# ---- genalloc (pyx/genalloc.pxi) ---------------------------------------------------------------

cdef struct nm_gen_pool
cdef struct nm_gen_pool_chunk

# include/linux/genalloc.h: genpool_algo_t. Departs: the algorithm gets the chunk (its bitmap and
# the summary levels over it) where the kernel passes the bitmap alone.
ctypedef unsigned long (*genpool_algo_t)(nm_gen_pool_chunk *chunk, unsigned long size,
                                         unsigned long start, unsigned int nr, void *data,
                                         nm_gen_pool *pool,
                                         unsigned long start_addr) noexcept nogil

cdef struct genpool_data_align:
    int align                   # alignment in bytes of the start address

cdef struct genpool_data_fixed:
    unsigned long offset        # offset in bytes of the region inside a chunk

cdef struct nm_gen_pool_chunk:
    nm_gen_pool_chunk *next_chunk   # list_add_rcu() at the head: the newest chunk comes first
    int64_t avail               # atomic_long_t avail: bytes, a partial last unit included
    uint64_t phys_addr
    void *owner                 # private data handed back by the _owner calls
    unsigned long start_addr
    unsigned long end_addr      # inclusive
    unsigned long nbits         # chunk_size >> min_alloc_order: the algorithms' size
    unsigned long first_zero    # model-only hint: every bit below it is set
    int nid
    int nlevels                 # 1 + the summary levels
    # level[0] is the kernel's bits[]; bit i of level[k] is set when word i of level[k - 1] is
    # all ones. Bits past the end of each level are kept set, so a full word means full.
    unsigned long nwords[8]
    unsigned long *level[8]

cdef struct nm_gen_pool:
    nm_gen_pool_chunk *chunks
    int min_alloc_order
    int nid
    genpool_algo_t algo
    void *data
    uint32_t nr_chunks
    uint64_t nr_warn_fixed      # gen_pool_fixed_alloc(): WARN_ON(unaligned offset), counted


cdef class GenPoolAlgo:
    cdef genpool_algo_t fn
    cdef readonly str name
    cdef int data_kind          # 0: no data, 1: genpool_data_align, 2: genpool_data_fixed


cdef class GenPoolDataAlign:
    cdef genpool_data_align d


cdef class GenPoolDataFixed:
    cdef genpool_data_fixed d


cdef class CoreGenPool:
    cdef nm_gen_pool *pool
    cdef list _owners           # the Python owners the C chunks point at (borrowed there)
    cdef readonly GenPoolAlgo algo
    cdef readonly object data
    cdef int _check_alive(self) except -1

# ---- the RX stack: skbs, NAPI, GRO, TCP (pyx/skb.pxi, napi.pxi, gro.pxi, tcp_rx.pxi) -------------

# skb_frag_t (include/linux/skbuff.h): a netmem, its length and offset.
cdef struct nm_frag:
    netmem_ref netmem
    uint32_t len
    uint32_t offset

# struct skb_shared_info, with the head it sits under. A head is either kmalloc'ed (its bytes in
# `linear`, as napi_alloc_skb() gives) or a page_pool frag (napi_build_skb() over a header buffer).
cdef struct nm_shinfo:
    uint8_t nr_frags
    uint8_t head_frag           # skb->head_frag: the head is a page frag (head_netmem)
    uint16_t _pad
    int32_t dataref             # atomic_t dataref: the skb and its clones
    netmem_ref head_netmem
    uint32_t head_off           # offset of the head in its page
    uint32_t next_free
    nm_frag frags[17]           # MAX_SKB_FRAGS (CONFIG_MAX_SKB_FRAGS default)
    uint8_t linear[256]         # a kmalloc'ed head (headers copied by the driver)

# struct rb_node (pyx/rbtree.pxi), in a table beside the objects it orders: links are indices,
# NM_NIL for NULL.
cdef struct nm_rb_node:
    uint32_t parent
    uint32_t rb_left
    uint32_t rb_right
    uint32_t color              # RB_RED or RB_BLACK

# struct sk_buff: the fields the RX path reads, and TCP_SKB_CB.
cdef struct nm_skb:
    uint32_t shinfo             # index of the shared info (clones share it)
    uint32_t next               # list links (GRO bucket, socket queues, defer list)
    uint32_t prev
    uint32_t data               # skb->data, as an offset from skb->head
    uint32_t len
    uint32_t data_len
    uint32_t truesize
    uint32_t seq                # TCP_SKB_CB(skb)->seq
    uint32_t end_seq
    uint32_t ack_seq
    uint32_t hash               # skb->hash (the RSS hash from the device)
    uint32_t sk                 # owning socket index, NM_NIL for none
    uint32_t napi_id
    uint16_t mac_header         # offsets from skb->head
    uint16_t network_header
    uint16_t transport_header
    uint16_t vlan_tci
    uint16_t alloc_cpu
    uint16_t gso_size           # GRO: the first segment's payload (the MSS GRO saw)
    uint16_t gso_segs
    uint8_t tcp_flags
    uint8_t pp_recycle
    uint8_t unreadable
    uint8_t cloned
    uint8_t protocol            # model: 4 or 6 for IP, NM_SKB_PROTO_VLAN_CUT, 0 otherwise
    uint8_t ip_proto
    uint8_t gro_flush           # NAPI_GRO_CB(skb)->flush
    uint8_t _pad
    uint8_t pfmemalloc          # skb->pfmemalloc: a page frag or head from the memalloc reserves
    uint8_t pkt_type            # skb->pkt_type: PACKET_HOST (0) or PACKET_OTHERHOST (3)

# The device's view of a frame, from its parser (and the flow dissector's eth_get_headlen()).
cdef struct nm_pkt:
    int status                  # NM_PKT_*: what the parser found
    uint32_t len                # frame length on the wire
    uint16_t l3_off             # offsets in the wire frame (VLAN tags included)
    uint16_t l4_off
    uint16_t hdr_len            # L2..L4 headers (where header split cuts), 0 when not TCP
    uint16_t vlan_off           # offset of the first VLAN tag, 0 for none
    uint8_t nr_vlans
    uint8_t family              # 4, 6 or 0
    uint8_t ip_proto
    uint8_t _pad
    uint16_t vlan_tci
    uint16_t vlan_tci2          # the second tag's TCI (0 for fewer than two tags)
    uint16_t ethertype          # after the VLAN tags (host order)

cdef struct nm_ntuple:
    int32_t loc                 # rule id (ethtool location); -1 for a free slot
    uint8_t family              # 4 (tcp4) or 6 (tcp6)
    uint8_t has_src
    uint8_t has_dst
    uint8_t has_sport
    uint8_t has_dport
    uint8_t src[16]
    uint8_t dst[16]
    uint16_t sport
    uint16_t dport
    uint32_t queue

# One posted RX buffer (a descriptor of the device's ring).
cdef struct nm_rx_buf:
    netmem_ref netmem           # 0: the slot is empty (the refill failed)
    uint32_t offset
    uint32_t size
    uint64_t dma                # DMA address of the buffer (page DMA address + offset)

cdef struct nm_rxq_stats:
    uint64_t packets            # netdev qstats rx-packets / rx-bytes: frames given to the stack
    uint64_t bytes
    uint64_t alloc_fail         # rx-alloc-fail: refills the page pool could not serve
    uint64_t hw_drops           # rx-hw-drops: every frame the device dropped
    uint64_t hw_drop_overruns   # rx-hw-drop-overruns: no posted buffer for the frame
    uint64_t length_errors      # frames above the MTU (also in hw_drops)
    uint64_t faults             # IOMMU faults on the frame's DMA (also in hw_drops)
    uint64_t polls
    uint64_t hds_split          # frames whose headers went to a header buffer
    uint64_t skb_alloc_fail     # no skb could be built (also a drop)

cdef struct nm_gro_stats:
    uint64_t merged             # GRO_MERGED and GRO_MERGED_FREE
    uint64_t held               # GRO_HELD
    uint64_t normal             # GRO_NORMAL: passed up unmerged (not GRO-able)
    uint64_t flushes            # skbs flushed up the stack
    uint64_t flush_e2big        # skb_gro_receive(): -E2BIG (64 KiB or MAX_SKB_FRAGS)
    uint64_t flush_toomanyrefs  # skb_gro_receive(): -ETOOMANYREFS (pp_recycle mismatch)

# A descriptor ring of posted buffers: the device fills at ``head``, the driver refills at
# ``tail``; ``nr_empty`` slots (from tail) wait for a refill.
cdef struct nm_rx_ring:
    nm_rx_buf *slots
    uint32_t size
    uint32_t head
    uint32_t tail
    uint32_t nr_empty

cdef struct nm_rxq:
    void *dev                   # the nm_netdev
    uint32_t idx
    int cpu                     # the CPU the queue's NAPI runs on
    nm_napi *napi               # the RxQueue's Napi (list_owner is set while it polls)
    nm_pool *hdr_pool           # header split: the header buffers (host pages)
    nm_pool *pool               # payload buffers (the queue's memory provider, if any)
    nm_rx_ring ring             # payload (or only) buffers
    nm_rx_ring hdr_ring         # header buffers (header split)
    uint32_t buf_size           # payload buffer size
    int started
    int hds                     # header split on
    uint32_t hds_thresh
    uint32_t *pending           # frame indices steered to this queue, not yet polled
    uint32_t npending
    uint32_t pending_pos
    uint32_t gro_head[8]        # GRO_HASH_BUCKETS lists of held skbs (oldest first)
    uint32_t gro_count[8]
    nm_gro_stats gro
    nm_rxq_stats stats
    uint64_t trace_ts           # traced: the latest frame time of its polls (they never go back)

cdef struct nm_netdev:
    nm_machine *m
    nm_device *dma_dev
    uint32_t ifindex
    uint32_t mtu
    uint32_t num_rxq            # real_num_rx_queues
    nm_rxq *rxq                 # num_rx_queues of them (the maximum)
    uint32_t max_rxq
    uint32_t indir[128]         # the RSS indirection table
    uint32_t indir_size
    uint8_t key[40]
    uint32_t toeplitz[9216]     # 36 input byte positions x 256 values: the hash contributions
    nm_ntuple *rules
    uint32_t nr_rules
    uint64_t rx_nohandler       # dev core stats: frames no protocol took
    uint64_t rx_dropped         # dev core stats: frames the stack could not take
    uint64_t rx_length_errors
    uint64_t rx_otherhost_dropped   # dev core stats: PACKET_OTHERHOST frames ip_rcv_core() drops
    uint64_t vlan_devs[64]      # VLAN devices on it (register_vlan_device()): a bit per VLAN id
    uint32_t vlan_stacked[64]   # VLAN devices on those: (outer id << 16) | inner id
    uint32_t nr_vlan_stacked
    nm_pkt *pkts                # per frame of the chunk at hand: what the parser found
    uint32_t *hashes            # and its RSS hash
    uint32_t scratch_cap        # frames the scratch arrays and every queue's pending hold
    const uint64_t *ts          # the trace's timestamps during receive(), or NULL: frames arrive
    int64_t ts_base             # at clock_ns; else frame i at ts_base + ts[i] (virtual ns)

# The socket's receive side (struct tcp_sock, the parts receive touches).
cdef struct nm_sock:
    uint8_t family
    uint8_t state               # NM_TCP_*
    uint8_t used
    uint8_t sack_ok             # SACK permitted (from the SYN's options)
    uint8_t dsack               # tp->rx_opt.dsack: a D-SACK is set for the segment at hand
    uint8_t num_sacks           # tp->rx_opt.num_sacks: blocks in selective_acks (at most 4)
    uint8_t tstamp_ok           # tp->rx_opt.tstamp_ok: the SYN carried timestamps
    uint8_t on_rdllist          # on n.rdllist (kept when the slot is reused: the entry stays)
    uint8_t laddr[16]
    uint8_t raddr[16]
    uint16_t lport
    uint16_t rport
    uint32_t hnext              # hash chain (socket index, NM_NIL at the end)
    uint32_t rcv_nxt
    uint32_t copied_seq
    uint32_t rq_head            # sk_receive_queue (skb indices, NM_NIL when empty)
    uint32_t rq_tail
    uint32_t ofo_head           # out_of_order_queue in seq order (rb_first .. ooo_last_skb)
    uint32_t ofo_tail
    uint32_t ofo_root           # out_of_order_queue.rb_node, over n.skb_rb
    int err                     # sk->sk_err
    uint32_t shutdown           # RCV_SHUTDOWN once the FIN is taken
    uint64_t rmem_alloc         # sk_rmem_alloc: truesize of queued skbs
    uint64_t rcvbuf
    uint64_t bytes_received     # tcpi_bytes_received
    uint64_t segs_in
    uint64_t data_segs_in
    uint64_t ofo_len            # skbs on the out-of-order queue
    uint32_t last_oow_ack_time  # tp->last_oow_ack_time (tcp_jiffies32; 0: none yet)
    # tp->selective_acks[TCP_NUM_SACKS] and tp->duplicate_sack[0], (start_seq, end_seq) each:
    # the SACK blocks the receiver would send, most recently touched first.
    uint32_t selective_acks[8]
    uint32_t duplicate_sack[2]
    # sk->sk_user_frags: devmem tokens (xarray ALLOC1, xa_limit_31b) -> net_iov; a bitmap of
    # the used tokens (bit 0 always set) lets xa_alloc() find the lowest free one a word at a time.
    netmem_ref *user_frags
    uint64_t *uf_used
    uint32_t uf_cap             # tokens the arrays hold (a multiple of 64)
    uint32_t uf_hint            # every token below it is in use
    uint64_t uf_count           # outstanding tokens
    # The ACK side (pyx/tcp_ack.pxi): icsk->icsk_ack and the tcp_sock window fields.
    uint8_t ack_pending         # icsk_ack.pending: ICSK_ACK_SCHED | ICSK_ACK_TIMER | ICSK_ACK_NOW
    uint8_t ack_quick           # icsk_ack.quick: quick ACKs left
    uint8_t pingpong            # inet_csk_in_pingpong_mode() (set by tcp_fin())
    uint8_t rcv_wscale          # tp->rx_opt.rcv_wscale (0: the SYN had no window scale option)
    uint8_t on_delack           # on n.delack_list
    uint8_t rcvbuf_lock         # SOCK_RCVBUF_LOCK: sk_rcvbuf was set (m.tcp.rcvbuf), never tuned
    uint32_t ato                # icsk_ack.ato (jiffies)
    uint32_t lrcvtime           # icsk_ack.lrcvtime (tcp_jiffies32)
    uint32_t ack_timeout        # icsk_ack.timeout (jiffies)
    uint32_t rcv_mss            # icsk_ack.rcv_mss
    uint32_t advmss             # tp->advmss
    uint32_t rcv_wup            # tp->rcv_wup: rcv_nxt at the last window update sent
    uint32_t rcv_wnd            # tp->rcv_wnd
    uint32_t rcv_ssthresh       # tp->rcv_ssthresh
    uint32_t window_clamp       # tp->window_clamp
    uint32_t snd_nxt            # the receiver's own sequence (ISS + 1: it sends no data)
    uint32_t ts_recent          # tp->rx_opt.ts_recent: TSecr of the next ACK
    # Receive-buffer autotuning (pyx/tcp_rmem.pxi): tp->rcvq_space and tp->rcv_rtt_est, times in
    # us of the stack's clock (tp->tcp_mstamp).
    uint32_t rcvq_space         # rcvq_space.space: bytes the reader took in the last RTT
    uint32_t rcvq_seq           # rcvq_space.seq: copied_seq when it was measured
    uint64_t rcvq_time          # rcvq_space.time
    uint32_t rcv_rtt_us         # rcv_rtt_est.rtt_us (<< 3; 0: none yet)
    uint32_t rcv_rtt_seq        # rcv_rtt_est.seq: rcv_nxt + rcv_wnd when the measure began
    uint64_t rcv_rtt_time       # rcv_rtt_est.time (0: no measure yet)

# One ACK the receiver sent (tcp_send_ack()), as m.tcp.acks() returns it (ACK_DTYPE).
cdef struct nm_ack_rec:
    uint64_t t_ns               # virtual time it left (the stack's clock)
    uint32_t slot               # the socket
    uint32_t seq
    uint32_t ack
    uint16_t win                # the window field as sent (scaled by rcv_wscale)
    uint8_t flags               # TCP flags (ACK)
    uint8_t nr_sack             # SACK blocks in sack (a D-SACK first)
    uint32_t tsval              # TSval/TSecr (0 without timestamps)
    uint32_t tsecr
    uint32_t sack[8]            # (start, end) pairs

cdef struct nm_tcp_mib:
    uint64_t InSegs
    uint64_t InErrs
    uint64_t OutRsts
    uint64_t PassiveOpens
    uint64_t TCPOFOQueue
    uint64_t TCPOFOMerge
    uint64_t TCPOFODrop
    uint64_t TCPRcvCoalesce
    uint64_t TCPRcvQDrop
    uint64_t DelayedACKLost
    uint64_t TCPDSACKOldSent
    uint64_t TCPDSACKOfoSent
    uint64_t TCPAbortOnData
    uint64_t TCPZeroWindowDrop
    uint64_t TCPChallengeACK
    uint64_t TCPSYNChallenge
    uint64_t TCPAbortOnClose
    uint64_t PFMemallocDrop     # LINUX_MIB_PFMEMALLOCDROP (TcpExt, counted by sk_filter_trim_cap())
    uint64_t TCPACKSkippedChallenge     # tcp_send_challenge_ack()'s per-socket rate limit
    uint64_t OutSegs            # Tcp: OutSegs (the ACKs sent)
    uint64_t DelayedACKs        # tcp_delack_timer_handler() sent one
    uint64_t TCPWantZeroWindowAdv
    uint64_t TCPToZeroWindowAdv
    uint64_t TCPFromZeroWindowAdv
    uint64_t PruneCalled        # tcp_prune_queue() (pyx/tcp_rmem.pxi)
    uint64_t RcvPruned
    uint64_t OfoPruned
    uint64_t TCPRcvCollapsed
    uint64_t BeyondWindow       # LINUX_MIB_BEYOND_WINDOW (6.17): tcp_sequence() past the window
    uint64_t TCPACKSkippedSeq   # tcp_oow_rate_limited() held a dup ACK back

cdef struct nm_ip_mib:
    uint64_t InReceives
    uint64_t InHdrErrors
    uint64_t InTruncatedPkts
    uint64_t InUnknownProtos
    uint64_t InDelivers
    uint64_t ReasmReqds
    uint64_t ReasmFails

# Udp: and Udp6 counters (struct udp_mib), the ones a receiver without UDP sockets counts.
cdef struct nm_udp_mib:
    uint64_t InDatagrams
    uint64_t NoPorts
    uint64_t InErrors

# Icmp: and Icmp6 counters (InMsgs, InErrors) and IcmpMsg: (InType<N>, per message type).
cdef struct nm_icmp_mib:
    uint64_t InMsgs
    uint64_t InErrors
    uint64_t InType[256]

# struct dmabuf_cmsg with the cmsg type in front (netmem.tcp.DMABUF_CMSG_DTYPE).
cdef struct nm_dmabuf_cmsg:
    uint32_t cmsg_type          # SCM_DEVMEM_LINEAR or SCM_DEVMEM_DMABUF
    uint32_t frag_size
    uint64_t frag_offset
    uint32_t frag_token
    uint32_t dmabuf_id

# Where the time goes (pyx/profile.pxi, ``netmem-replay --profile``): TSC cycles by stage of the
# data plane, stamped at each stage boundary while ``on``, and the virtual time from each skb's DMA
# write to the application's read of it. Sizes: NM_PROF_NR stages (12, room for 16) and
# NM_LAT_BUCKETS (496: log2 octaves of 8 linear buckets each, over 64-bit ns).
cdef struct nm_prof:
    uint32_t on                 # stage boundaries are stamped (the profiled code runs)
    uint32_t stage              # the stage running since ``last``
    uint32_t rng                # xorshift32 state of the poll sampling
    uint32_t _pad
    uint64_t last               # TSC at the last boundary
    uint64_t cyc[16]            # TSC cycles by stage
    uint64_t marks[16]          # boundaries that closed an interval of each stage
    uint64_t frames[2]          # frames taken by unsampled and by sampled NAPI polls
    uint64_t lat_hist[496]      # skbs read, by virtual ns from DMA write to read
    uint64_t lat_max

cdef struct nm_net:
    nm_machine *m
    nm_skb *skbs                # lazily committed tables, never moved
    # skb->tstamp of each skb, beside the table: the virtual ns of its DMA write |
    # NM_TSTAMP_SET (0: none). Written and read only while profiling, so an skb stays 76 bytes
    # and an unprofiled run never touches these pages.
    uint64_t *skb_tstamp
    nm_shinfo *shinfos
    nm_rb_node *skb_rb          # skb->rbnode (the out-of-order queue), beside the table
    uint32_t skb_cap
    uint32_t skb_free           # free lists (NM_NIL when empty)
    uint32_t shinfo_free
    uint32_t skb_next           # first never-used index
    uint32_t shinfo_next
    uint64_t skbs_live
    nm_sock *socks
    uint32_t nr_socks
    uint32_t cap_socks
    nm_dmabuf_cmsg *cm_scratch  # devmem recvmsg's cmsgs before they become an array
    uint32_t cm_cap
    # The ready list of the one epoll instance that watches every socket (ep->rdllist): slots
    # woken by ep_poll_callback(), each at most once; as long as socks (cap_socks entries).
    uint32_t *rdllist
    uint32_t rdl_len
    uint32_t *sk_hash           # buckets of socket indices (NM_NIL when empty)
    uint32_t sk_hash_mask
    uint32_t sk_free            # closed socket slots for reuse (NM_NIL when none)
    int open_on_data            # open a socket on the first segment of a flow seen mid-way
    uint64_t rcvbuf
    uint8_t rcvbuf_lock         # m.tcp.rcvbuf was set: new sockets' sk_rcvbuf is locked
    uint8_t moderate_rcvbuf     # net.ipv4.tcp_moderate_rcvbuf
    uint32_t tcp_rmem[3]        # net.ipv4.tcp_rmem: min, default (new sockets), max
    uint32_t rcvbuf_low_rtt     # net.ipv4.tcp_rcvbuf_low_rtt (us)
    uint32_t defer_head[64]     # per-CPU skb defer lists (skb_attempt_defer_free())
    uint32_t defer_count[64]
    uint32_t defer_max          # net.core.skb_defer_max
    uint64_t defer_kicks
    nm_tcp_mib tcp
    nm_ip_mib ip
    nm_ip_mib ip6
    nm_udp_mib udp
    nm_udp_mib udp6
    nm_icmp_mib icmp
    nm_icmp_mib icmp6
    # The stack's clock: while a NAPI poll runs, the arrival of the frame it took last (0: the
    # machine's clock); tcp_jiffies32 is read from it.
    uint64_t now_ns
    # net.ipv4.tcp_invalid_ratelimit (ms) and tcp_challenge_ack_limit (INT_MAX: off), with the
    # per-netns state of tcp_send_challenge_ack() and the xorshift32 state of its random draw.
    uint32_t invalid_ratelimit
    uint32_t challenge_ack_limit
    uint32_t challenge_timestamp
    uint32_t challenge_count
    uint32_t challenge_rng
    uint64_t drop_reasons[32]   # SKB_DROP_REASON_* the model uses (NM_DROP_*)
    # The ACKs sent (pyx/tcp_ack.pxi): a ring of ack_cap records (a power of two), produced at
    # ack_head, drained from ack_tail by m.tcp.acks(); a full ring drops (ack_dropped).
    nm_ack_rec *acks
    uint64_t ack_head
    uint64_t ack_tail
    uint64_t ack_dropped
    uint32_t ack_cap
    # The sockets with an armed delayed-ACK timer, and the earliest deadline (ns; 0: none).
    uint32_t *delack_list
    uint32_t delack_len
    uint64_t delack_next
    nm_prof prof                # netmem-replay --profile (pyx/profile.pxi); cold while off


# ---- devmem TCP (pyx/devmem.pxi) ---------------------------------------------------------------
# struct net_devmem_dmabuf_binding, as the data plane needs it: the chunk pool and, for each of
# its chunks (a dmabuf_genpool_chunk_owner), the DMA range and the first net_iov, sorted by DMA
# address so that an address from gen_pool_alloc_owner() finds its net_iov without the GIL.
cdef struct nm_devmem_binding:
    nm_gen_pool *chunk_pool
    uint32_t id
    uint32_t niov_shift         # binding->niov_shift: PAGE_SHIFT, or log2(rx-buf-size)
    uint32_t nchunks
    uint64_t *chunk_dma
    uint64_t *chunk_niov
    int64_t ref                 # binding->ref: the user, each page pool, each TX skb frag
    uint32_t dev_ifindex        # binding->dev's ifindex (0 once cleared)
    netmem_ref *tx_vec          # TX bindings: the net_iov at each 4 KiB of the dma-buf
    uint64_t tx_vec_len
    uint64_t dmabuf_size

cdef class CoreDmabufBinding:
    cdef nm_devmem_binding b
    cdef object _chunk_pool     # the CoreGenPool the C struct points into


# devmem TX (pyx/devmem_tx.pxi). A TX skb's frag: a net_iov of a TX binding (holding a
# binding reference, as get_netmem() -> net_devmem_get_net_iov() does), offset and length.
cdef struct nm_tx_frag:
    netmem_ref netmem
    nm_devmem_binding *b
    uint32_t off
    uint32_t len

# A TCP skb on the write queue (unsent) or the retransmit queue (sent, not yet acked).
cdef struct nm_tx_skb:
    uint32_t seq
    uint32_t end_seq
    uint64_t frag0              # its first frag in the socket's frag array
    uint32_t nr_frags
    int32_t uarg                # its ubuf_info_msgzc slot (skb_zcopy()), -1 for none
    uint8_t tcp_flags           # TCPHDR_SYN, TCPHDR_FIN, TCPHDR_PSH
    uint8_t sent

# struct ubuf_info_msgzc: one MSG_ZEROCOPY notification's range and references.
cdef struct nm_uarg:
    uint32_t id
    uint32_t len
    uint32_t bytelen
    uint32_t refcnt
    uint8_t zerocopy
    uint8_t live

# A queued SO_EE_ORIGIN_ZEROCOPY sock_extended_err: ee_info (lo), ee_data (hi), ee_code.
cdef struct nm_zc_notif:
    uint32_t lo
    uint32_t hi
    uint8_t code

# The device's TX queue and the wire its frames go out on (one bytes arena, as a PacketTrace).
cdef struct nm_txq:
    nm_device *dev              # netdev_queue_get_dma_dev(netdev, 0, NETDEV_QUEUE_TYPE_TX)
    uint32_t ifindex
    bint netmem_tx
    uint8_t *arena
    uint64_t arena_len
    uint64_t arena_cap
    uint64_t *offs
    uint32_t *lens
    uint64_t *ts
    uint64_t nframes
    uint64_t frames_cap
    uint64_t tx_packets
    uint64_t tx_bytes
    uint64_t tx_dropped         # dev_core_stats_tx_dropped_inc() (validate_xmit_skb())
    uint64_t payload_bytes      # TCP payload on the wire since the last take (PacketTrace's)

cdef struct nm_tx_sock:
    nm_txq *dst                 # the route's device (__sk_dst_get(sk)->dev)
    uint8_t hdr[54]             # Ethernet + IPv4 + TCP header template
    uint32_t isn
    uint32_t snd_una
    uint32_t snd_nxt
    uint32_t write_seq
    uint32_t snd_wnd
    uint32_t max_window
    uint32_t rcv_nxt
    uint32_t mss
    uint16_t ip_id
    uint32_t zckey              # sk->sk_zckey
    bint zerocopy               # SOCK_ZEROCOPY (SO_ZEROCOPY)
    bint dead                   # SOCK_DEAD: closed; completions are no longer queued
    nm_tx_skb *skbs             # [skb_head, skb_tail): rtx queue, then write queue
    uint64_t skb_head
    uint64_t skb_tail
    uint64_t skb_cap
    uint64_t send_head          # the first unsent skb (tcp_send_head())
    nm_tx_frag *frags
    uint64_t frag_head
    uint64_t frag_tail
    uint64_t frag_cap
    nm_uarg *uargs
    uint32_t uarg_cap
    nm_zc_notif *errq
    uint64_t errq_head
    uint64_t errq_tail
    uint64_t errq_cap
    uint64_t segs_out           # tcp_info: tcpi_segs_out, tcpi_data_segs_out, tcpi_bytes_sent,
    uint64_t data_segs_out      # tcpi_bytes_acked
    uint64_t bytes_sent
    uint64_t bytes_acked

cdef class CoreTxQueue:
    cdef nm_txq q
    cdef object _dev            # the CoreDevice q.dev points into

cdef class CoreTxSock:
    cdef nm_tx_sock sk
    cdef object _dst            # the CoreTxQueue sk.dst points into
    cdef dict _bindings         # id -> CoreDmabufBinding, for every binding a frag points into


cdef class CoreNetDevice:
    cdef nm_netdev *nd
    cdef readonly CoreMachine machine
    cdef object _keep               # the pools, napis and device the C side points at

# ---- io_uring zcrx (pyx/zcrx.pxi) ----------------------------------------------------------------

# A 32-byte CQE (struct io_uring_cqe with big_cqe[2], the zcrx CQE's struct io_uring_zcrx_cqe):
# the completion queue an IoUring shares with its application.
cdef struct nm_io_cqe:
    uint64_t user_data
    int32_t res
    uint32_t flags
    uint64_t zcrx_off           # struct io_uring_zcrx_cqe: off, __pad
    uint64_t zcrx_pad

cdef struct nm_io_cq:
    nm_io_cqe *cqes             # the CQ ring (the Python IoUring's numpy array)
    uint32_t *khead             # the ring's head (the application advances it) and tail
    uint32_t *ktail
    uint32_t mask               # cq_entries - 1
    uint32_t cqe_flags          # IORING_CQE_F_32 on a CQE_MIXED ring, else 0
    uint64_t overflow           # CQEs refused because the ring was full

# struct io_zcrx_ifq with its one struct io_zcrx_area, as the data path needs it. The refill
# ring and the stats live in the ifq's region (the Python IoZcrxIfq's numpy array); the
# freelist and the user refs in arrays the Python object owns.
cdef struct nm_zcrx_ifq:
    nm_machine *m
    uint32_t *rq_head           # struct io_uring: head, tail (shared with the application)
    uint32_t *rq_tail
    uint64_t *rqes              # struct io_uring_zcrx_rqe[rq_entries]: off, len | __pad << 32
    uint32_t rq_entries
    uint32_t cached_rq_head
    uint64_t niov_base          # global index of the area's first net_iov
    uint32_t num_niovs
    uint32_t niov_shift
    uint32_t *freelist
    uint32_t free_count
    int32_t *user_refs          # area->user_refs
    uint64_t *niov_phys         # kernel-readable area: each net_iov's memory (else NULL)
    bint kern_readable
    uint32_t allowed_events     # the event descriptor's type_mask
    uint32_t fired_events       # fired and not re-armed (ZCRX_CTRL_ARM_EVENT)
    uint32_t pending_events     # fired, their CQE not yet posted (the task work)
    uint64_t *stats             # struct zcrx_stats in the region, or NULL

# ---- closed loop, sender side (pyx/tcp_cong.pxi, tcp_rtt.pxi, link.pxi, event_heap.pxi) -------

# struct bictcp of net/ipv4/tcp_cubic.c (Linux 6.12).
cdef struct nm_bictcp:
    uint32_t cnt                # increase cwnd by 1 after ACKs
    uint32_t last_max_cwnd      # last maximum snd_cwnd
    uint32_t last_cwnd          # the last snd_cwnd
    uint32_t last_time          # time when updated last_cwnd (jiffies)
    uint32_t bic_origin_point   # origin point of bic function
    uint32_t bic_K              # time to origin point from the beginning of the epoch
    uint32_t delay_min          # min delay (usec)
    uint32_t epoch_start        # beginning of an epoch (jiffies)
    uint32_t ack_cnt            # number of acks
    uint32_t tcp_cwnd           # estimated tcp cwnd
    uint8_t sample_cnt          # number of samples to decide curr_rtt
    uint8_t found               # the exit point is found?
    uint32_t round_start        # beginning of each round (usec)
    uint32_t end_seq            # end_seq of the round
    uint32_t last_ack           # last time when the ACK spacing is close (usec)
    uint32_t curr_rtt           # the minimum rtt of current round

cdef struct nm_tcp_cc_sock

# struct tcp_congestion_ops: the hooks the sender calls (include/net/tcp.h).
cdef struct nm_tcp_congestion_ops:
    uint32_t (*ssthresh)(nm_tcp_cc_sock *tp) noexcept nogil
    void (*cong_avoid)(nm_tcp_cc_sock *tp, uint32_t ack, uint32_t acked) noexcept nogil
    void (*set_state)(nm_tcp_cc_sock *tp, uint8_t new_state) noexcept nogil
    void (*cwnd_event)(nm_tcp_cc_sock *tp, int ev) noexcept nogil
    uint32_t (*undo_cwnd)(nm_tcp_cc_sock *tp) noexcept nogil
    void (*pkts_acked)(nm_tcp_cc_sock *tp, uint32_t pkts_acked, int64_t rtt_us) noexcept nogil
    void (*init)(nm_tcp_cc_sock *tp) noexcept nogil
    const char *name

# The sender-side fields of struct tcp_sock / inet_connection_sock the congestion control, the
# RTT estimator and the RTO read and write. Sequence numbers count segments, not bytes.
cdef struct nm_tcp_cc_sock:
    uint32_t snd_cwnd
    uint32_t snd_cwnd_cnt
    uint32_t snd_cwnd_clamp
    uint32_t snd_ssthresh
    uint32_t prior_cwnd
    uint32_t prior_ssthresh
    uint32_t packets_out
    uint32_t max_packets_out
    bint is_cwnd_limited
    uint32_t snd_una
    uint32_t snd_nxt
    uint32_t high_seq
    uint32_t lsndtime           # jiffies of the last send
    uint64_t tcp_mstamp         # usec clock of the last ACK processed
    uint32_t srtt_us            # smoothed RTT << 3, usec
    uint32_t mdev_us            # medium deviation << 2
    uint32_t mdev_max_us        # maximal mdev for the last RTT period
    uint32_t rttvar_us          # smoothed mdev_max
    uint32_t rtt_seq            # sequence number to update rttvar
    uint32_t icsk_rto           # jiffies
    uint8_t icsk_backoff
    uint8_t icsk_ca_state       # TCP_CA_*
    uint8_t prr                 # the sender does PRR (tcp_cwnd_reduction()); CoreCongestion not
    uint32_t prr_delivered      # tp->prr_delivered, prr_out: PRR's counts since the reduction began
    uint32_t prr_out
    const nm_tcp_congestion_ops *icsk_ca_ops
    nm_bictcp ca                # inet_csk_ca()

# A unidirectional link: rate, one-way delay, a drop-tail byte-limited FIFO, random loss.
cdef struct nm_link:
    uint64_t rate_bps
    uint64_t delay_ns
    uint64_t queue_bytes        # the FIFO's byte limit (frames queued or on the wire)
    uint32_t loss_thresh        # a frame is lost when the PRNG draws below this (2^32 scale)
    uint32_t rng                # xorshift32 state
    uint64_t busy_until         # when the wire finishes the last accepted frame
    uint64_t backlog            # bytes queued or serialising
    uint64_t *fin               # ring of (finish time, length) of frames in the FIFO
    uint32_t *len
    uint32_t head
    uint32_t count
    uint32_t cap
    uint64_t enqueued
    uint64_t dropped_queue
    uint64_t dropped_loss
    uint64_t delivered
    uint64_t bytes              # bytes delivered

cdef struct nm_event:
    uint64_t time
    uint64_t seq
    uint64_t arg
    uint32_t kind

cdef struct nm_event_heap:
    nm_event *ev
    uint64_t n
    uint64_t cap
    uint64_t next_seq

# ---- the closed loop's senders (pyx/tcp_output.pxi, tcp_recovery.pxi, tcp_timer.pxi, ...) --

# One segment of the retransmit queue (an skb of tcp_rtx_queue with its TCP_SKB_CB): the sender
# keeps no payload, which is made from (connection, offset) when the segment goes out.
cdef struct nm_tcp_seg:
    uint32_t seq
    uint32_t end_seq
    uint64_t xmit_ns            # skb->skb_mstamp_ns: the last (re)transmission
    uint8_t sacked              # TCPCB_SACKED_ACKED, _SACKED_RETRANS, _LOST, _EVER_RETRANS
    uint8_t tcp_flags           # TCPHDR_SYN / TCPHDR_FIN (the payload's flags are added on output)

# The sender's MIB (nstat names), summed over the connections of one loop.
cdef struct nm_tcp_snd_mib:
    uint64_t ActiveOpens
    uint64_t OutSegs
    uint64_t RetransSegs
    uint64_t InSegs             # ACKs taken
    uint64_t TCPFastRetrans     # retransmits outside Loss (recovery, RACK)
    uint64_t TCPSlowStartRetrans    # retransmits in Loss (after an RTO)
    uint64_t TCPTimeouts        # RTOs that fired
    uint64_t TCPLossProbes
    uint64_t TCPLossProbeRecovery
    uint64_t TCPSackRecovery    # recoveries entered
    uint64_t TCPSACKReorder
    uint64_t TCPDSACKRecv
    uint64_t TCPLostRetransmit
    uint64_t TCPSackRecoveryFail    # an RTO during recovery
    uint64_t TCPWinProbe        # zero-window probes (tcp_send_probe0())
    uint64_t TCPSynRetrans
    uint64_t TCPLossFailures    # an RTO in Loss
    uint64_t TCPSackFailures    # an RTO in Disorder, or with SACKed data

# The sender side of one connection: struct tcp_sock / inet_connection_sock by kernel names.
# Sequence numbers are bytes (tp.snd_una, tp.snd_nxt, tp.high_seq are the cc sock's).
cdef struct nm_tcp_sender:
    nm_tcp_cc_sock tp
    uint8_t state               # NM_SND_*
    uint8_t snd_wscale          # tp->rx_opt.snd_wscale (the peer's)
    uint8_t icsk_pending        # ICSK_TIME_* armed (0: none)
    uint8_t rack_advanced
    uint8_t tlp_retrans         # the loss probe was a retransmission
    uint8_t fin                 # the application closed: a FIN follows write_seq
    uint8_t icsk_retransmits    # RTOs since snd_una last advanced (tcp_ack() zeroes it)
    uint16_t sport
    uint16_t ip_id
    uint32_t slot               # the receiver's socket (NM_NIL until the handshake)
    uint32_t iss
    uint32_t write_seq          # tp->write_seq: the end of the data written (the FIN's seq)
    uint32_t snd_wnd
    uint32_t snd_wl1
    uint32_t mss_cache          # the peer's MSS less the timestamp option
    uint32_t sacked_out
    uint32_t lost_out
    uint32_t retrans_out
    uint32_t tlp_high_seq
    uint32_t highest_sack       # end of the highest SACKed segment (0 with none)
    uint32_t rack_end_seq
    uint32_t rack_rtt_us
    uint32_t min_rtt_us
    uint32_t ts_recent          # the peer's last TSval (our TSecr)
    uint32_t rtx_hint           # tp->retransmit_skb_hint: no lost, unretransmitted segment below
    uint32_t reordering         # tp->reordering: the DUPACK threshold, grown by reordering seen
    uint32_t reord_seen         # tp->reord_seen
    uint64_t rack_mstamp
    uint64_t icsk_timeout       # ns
    uint64_t timer_ev           # ns of the heap event that will look at the timer (0: none)
    uint64_t retrans            # retransmits of this connection
    nm_tcp_seg *q               # the retransmit queue: a ring in sequence order
    uint32_t q_head
    uint32_t q_count
    uint32_t q_cap              # a power of two

cdef class CoreCongestion:
    cdef nm_tcp_cc_sock tp

cdef class CoreLink:
    cdef nm_link link

cdef class CoreEventHeap:
    cdef nm_event_heap h
