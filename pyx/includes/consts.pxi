# Constants of the kernel the core models, each with its source and reason.

cdef extern from *:
    """
    #ifndef NETMEM_DEBUG
    #define NETMEM_DEBUG 0
    #endif
    #define nm_likely(x)   __builtin_expect(!!(x), 1)
    #define nm_unlikely(x) __builtin_expect(!!(x), 0)
    #define nm_barrier()   __asm__ __volatile__("" ::: "memory")
    #define nm_prefetch(x) __builtin_prefetch(x)
    #define nm_prefetchw(x) __builtin_prefetch(x, 1)
    """
    const int NETMEM_DEBUG
    bint likely "nm_likely"(bint) noexcept nogil
    bint unlikely "nm_unlikely"(bint) noexcept nogil
    void barrier "nm_barrier"() noexcept nogil
    void prefetch "nm_prefetch"(const void *) noexcept nogil       # include/linux/prefetch.h
    void prefetchw "nm_prefetchw"(const void *) noexcept nogil

cdef enum:
    PAGE_SHIFT = 12
    PAGE_SIZE = 4096
    MAX_PAGE_ORDER = 10             # include/linux/mmzone.h: 4 MiB blocks with 4 KiB pages
    NR_PAGE_ORDERS = 11
    NUMA_NO_NODE = -1
    NM_MAX_NODES = 8
    NM_MAX_CPUS = 64
    NR_CPUS = 8192                  # CONFIG_NR_CPUS of distribution kernels
    MIN_NAPI_ID = 8193              # include/net/busy_poll.h: NR_CPUS + 1
    NET_IOV = 1                     # include/net/netmem.h: bit 0 of netmem_ref

    # include/net/page_pool/types.h
    PP_FLAG_DMA_MAP = 1 << 0
    PP_FLAG_DMA_SYNC_DEV = 1 << 1
    PP_FLAG_SYSTEM_POOL = 1 << 2
    PP_FLAG_ALLOW_UNREADABLE_NETMEM = 1 << 3
    PP_FLAG_ALL = 0xf
    PP_ALLOC_CACHE_SIZE = 128       # twice the NAPI budget
    PP_ALLOC_CACHE_REFILL = 64      # the NAPI budget
    PP_RING_DEFAULT = 1024          # page_pool_init(): ring size when pool_size is 0
    PP_RING_MAX = 16384             # page_pool_init(): min(pool_size, 16384)
    XDP_BULK_QUEUE_SIZE = 16        # include/net/xdp.h: page_pool_put_netmem_bulk()'s stack array
    SMP_CACHE_BYTES = 64

    # include/linux/dma-direction.h
    DMA_BIDIRECTIONAL = 0
    DMA_TO_DEVICE = 1
    DMA_FROM_DEVICE = 2
    DMA_NONE = 3

    # include/net/netmem.h: enum net_iov_type
    NET_IOV_DMABUF = 0
    NET_IOV_IOURING = 1
    NET_IOV_P2PDMA = 2              # ours, not in mainline: the p2pdma provider's BAR net_iovs

    # devmem TCP (include/uapi/asm-generic/socket.h, include/linux/socket.h, net/core/sock.c)
    SCM_DEVMEM_LINEAR = 78
    SCM_DEVMEM_DMABUF = 79
    MSG_SOCK_DEVMEM = 0x2000000
    MAX_DONTNEED_TOKENS = 128
    MAX_DONTNEED_FRAGS = 1024
    XA_CHUNK_SIZE = 64              # include/linux/xarray.h: slots of one xarray node
    ETOOSMALL = 525                 # include/linux/errno.h: kernel-internal, no libc name
    DMABUF_CMSG_SPACE = 40          # CMSG_SPACE(sizeof(struct dmabuf_cmsg)) = CMSG_LEN too

    # Page flags of the model (struct page flags the core needs).
    NM_PG_BUDDY = 1 << 0
    NM_PG_HEAD = 1 << 1
    NM_PG_TAIL = 1 << 2
    NM_PG_RESERVED = 1 << 3
    NM_PG_PFMEMALLOC = 1 << 4

    # Who holds a buffer (the model's ledger; the kernel cannot tell).
    NM_ST_NONE = 0                  # not a page_pool buffer (free, or a plain page)
    NM_ST_OWNED = 1                 # handed out by a pool
    NM_ST_CACHE = 2                 # in the pool's alloc cache
    NM_ST_RING = 3                  # in the pool's ptr_ring
    NM_ST_PUTTING = 4               # unrefed to 0 inside one bulk put, not yet placed

    # Warnings recorded on the hot path and raised as NetmemWarning at the Python boundary.
    NM_W_NOT_PP = 1                 # put of a buffer that is not a page_pool buffer
    NM_W_WRONG_POOL = 2             # put to a pool that does not own the buffer
    NM_W_DOUBLE_PUT = 3             # put of a buffer the pool already holds
    NM_W_PP_REF_NEG = 4             # page_pool_unref_netmem(): WARN_ON(ret < 0)
    NM_W_FRAG_SIZE = 5              # page_pool_alloc_frag_netmem(): WARN_ON(size > max_size)
    NM_W_CACHE_FULL = 6             # net_mp_netmem_place_in_cache(): WARN_ON_ONCE(count >= 128)
    NM_W_INFLIGHT_NEG = 7           # page_pool_inflight(): WARN(inflight < 0)
    NM_W_DIRECT_AFTER_DESTROY = 8   # allow_direct put on a destroyed pool (would strand the page)
    NM_W_PROVIDER_BAD = 9           # a provider returned a buffer it did not attach to the pool
    NM_W_DMA_OVERFLOW = 10          # dma_direct_map_phys(): dev_WARN_ONCE(overflow)
    NM_W_DEVMEM_REF = 11            # mp_dmabuf_devmem_release_page(): WARN_ON_ONCE(refcount != 1)
    NM_W_DEVMEM_FREE = 12           # net_devmem_free_dmabuf(): WARN_ON(!gen_pool_has_addr())
    NM_W_DEVMEM_NOT_NIOV = 13       # WARN_ON_ONCE(!netmem_is_net_iov()) / !napi_pp_put_page()
    NM_W_ZCRX_NOT_NIOV = 14         # io_pp_zc_release_netmem(): WARN_ON_ONCE(!netmem_is_net_iov())
    NM_P_DAC_NOTICE = 100           # printk, not WARN: dev_notice("Using %d-bit DMA addresses")

    # io_uring zcrx: include/uapi/linux/io_uring/zcrx.h and io_uring/zcrx.c (Linux 7.2).
    IORING_ZCRX_AREA_SHIFT = 48     # the area id sits above the byte offset in rqe/cqe off
    IO_SKBS_PER_CALL_LIMIT = 20     # io_zcrx_recv_skb(): skbs per RECV_ZC issue, then requeue
    ZCRX_EVENT_ALLOC_FAIL = 0       # enum zcrx_event_type
    ZCRX_EVENT_COPY = 1
    IORING_CQE_F_MORE = 1 << 1      # include/uapi/linux/io_uring.h: more CQEs will follow
    IORING_CQE_F_32 = 1 << 15       # a 32-byte CQE on a CQE_MIXED ring

    # Tracepoints: include/trace/events/page_pool.h, napi.h, skb.h, net.h; the last two are
    # the model's own (the kernel has no tracepoint in sock_devmem_dontneed() or
    # netdev_rx_queue_restart()).
    TP_PAGE_POOL_RELEASE = 1 << 0
    TP_PAGE_POOL_STATE_RELEASE = 1 << 1
    TP_PAGE_POOL_STATE_HOLD = 1 << 2
    TP_PAGE_POOL_UPDATE_NID = 1 << 3
    TP_NAPI_POLL = 1 << 4
    TP_KFREE_SKB = 1 << 5
    TP_NETIF_RECEIVE_SKB = 1 << 6
    TP_SOCK_DEVMEM_DONTNEED = 1 << 7
    TP_NETDEV_RX_QUEUE_RESTART = 1 << 8
    # The trace ring's records (56 bytes each: 14 MiB, committed as it fills): a replay's
    # untimed loop of the default workload records about 30,000; a full ring drops the newest
    # and counts them (trace_dropped), as perf counts lost records.
    NM_TRACE_RING = 1 << 18

cdef extern from *:
    """
    #define NM_NIL 0xffffffffu
    /* include/linux/poison.h (x86-64) and net/core/netmem_priv.h */
    #define POISON_POINTER_DELTA 0xdead000000000000ULL
    #define POISON_FREE 0x6b            /* what slab debugging fills freed objects with */
    #define PP_SIGNATURE (0x40ULL + POISON_POINTER_DELTA)
    #define PP_DMA_INDEX_SHIFT 7        /* 1 + __fls(PP_SIGNATURE - POISON_POINTER_DELTA) */
    #define PP_DMA_INDEX_BITS 32        /* MIN(32, __ffs(POISON_POINTER_DELTA) - shift) */
    #define PP_DMA_INDEX_MASK (((1ULL << PP_DMA_INDEX_BITS) - 1) << PP_DMA_INDEX_SHIFT)
    #define PP_MAGIC_MASK (~(PP_DMA_INDEX_MASK | 0x3ULL))
    #define DMA_MAPPING_ERROR (~0ULL)
    #define BIAS_MAX (0x7fffffffffffffffLL >> 1)  /* LONG_MAX >> 1 */
    """
    const uint32_t NM_NIL
    const int POISON_FREE
    const uint64_t PP_SIGNATURE
    const int PP_DMA_INDEX_SHIFT
    const uint64_t PP_DMA_INDEX_MASK
    const uint64_t PP_MAGIC_MASK
    const uint64_t DMA_MAPPING_ERROR
    const int64_t BIAS_MAX

# drivers/iommu/iova.c and drivers/iommu/dma-iommu.c (the IOVA allocator and the flush queue).
cdef enum:
    IOVA_RANGE_CACHE_MAX_SIZE = 6   # iova.c: log2 of the largest cached range + 1 (1..32 pages)
    IOVA_MAG_SIZE = 127             # iova.c: makes struct iova_magazine 1 KiB with its size word
    IOVA_DEPOT_DELAY_MS = 100       # iova.c: period of iova_depot_work_func()
    IOVA_DEFAULT_FQ_SIZE = 256      # dma-iommu.c: per-CPU flush queue ring (255 usable entries)
    IOVA_SINGLE_FQ_SIZE = 32768     # dma-iommu.c: the one queue of shadow_on_flush IOMMUs
    IOVA_DEFAULT_FQ_TIMEOUT = 10    # dma-iommu.c: ms until fq_flush_timeout() empties the queues
    IOVA_SINGLE_FQ_TIMEOUT = 1000   # dma-iommu.c: ms, for the single queue
    NM_RB_RED = 0                   # the range tree's node colours (lib/rbtree.c)
    NM_RB_BLACK = 1
    NM_IOVA_NIL = 0                 # index of the tree's NIL sentinel (no node)
    NM_IOVA_ANCHOR_NODE = 1         # index of the anchor node, [IOVA_ANCHOR, IOVA_ANCHOR]

cdef extern from *:
    """
    #define IOVA_ANCHOR (~0UL)          /* iova.c: the anchor node sits above the address space */
    """
    const unsigned long IOVA_ANCHOR
