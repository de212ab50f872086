# The pcap record walk of netmem/capture.py: the record headers chain (each one's captured
# length gives the next one's offset), so the walk is a loop, here in C without the GIL.


def pcap_heads(const uint8_t[::1] data, int64_t pos, int64_t stop, bint little,
               int64_t[::1] out):
    """Walk the pcap records of ``data`` from the one at ``pos`` while a record starts below
    ``stop`` and fits in ``data``: each one's offset into ``out`` (``len(out)`` at most).
    Returns (the records walked, the offset of the next one)."""
    cdef int64_t end = data.shape[0], n = 0, cap = out.shape[0]
    cdef const uint8_t *p
    cdef uint32_t incl
    with nogil:
        while pos + 16 <= end and pos < stop and n < cap:
            p = &data[pos + 8]
            if little:
                incl = p[0] | p[1] << 8 | p[2] << 16 | <uint32_t>p[3] << 24
            else:
                incl = p[3] | p[2] << 8 | p[1] << 16 | <uint32_t>p[0] << 24
            if pos + 16 + incl > end:
                break
            out[n] = pos
            n += 1
            pos += 16 + incl
    return n, pos
