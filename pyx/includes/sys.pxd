# C externs the core needs from libc / POSIX.
from libc.stdint cimport uint64_t

cdef extern from "<sys/mman.h>" nogil:
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void *addr, size_t length)
    int madvise(void *addr, size_t length, int advice)
    void *MAP_FAILED
    int PROT_READ
    int PROT_WRITE
    int MAP_PRIVATE
    int MAP_ANONYMOUS
    int MAP_NORESERVE
    int MADV_DONTNEED
    int MADV_HUGEPAGE

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    int CLOCK_MONOTONIC

cdef inline uint64_t nm_now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec


# The time-stamp counter, for the profile's stage boundaries (pyx/profile.pxi). An asm volatile
# with a memory clobber: never dropped or merged by the compiler, and no load or store moves
# across it, so a boundary stays where the code puts it. Not serialising (no lfence): a few
# cycles of overlap with the neighbouring work, against 25 to 40 cycles for rdtscp. Elsewhere
# than x86-64, CLOCK_MONOTONIC_RAW in ns (the profile calibrates its unit either way).
cdef extern from *:
    """
    #include <stdint.h>
    #include <time.h>
    static inline uint64_t nm_tsc(void)
    {
    #if defined(__x86_64__)
        uint32_t lo, hi;
        __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi) :: "memory");
        return ((uint64_t)hi << 32) | lo;
    #else
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
    #endif
    }
    """
    uint64_t nm_tsc() noexcept nogil
