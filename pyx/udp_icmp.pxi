# UDP and ICMP receive on a host with no UDP sockets: what ip_protocol_deliver_rcu() and
# ip6_protocol_deliver_rcu() hand to udp_rcv()/udpv6_rcv() and icmp_rcv()/icmpv6_rcv()
# (net/ipv4/udp.c, net/ipv6/udp.c, net/ipv4/icmp.c, net/ipv6/icmp.c; follows 6.12 to 7.x, whose
# receive paths agree on these steps). The MIBs are the kernel's Udp/Udp6, Icmp/Icmp6 and
# IcmpMsg/Icmp6 InType counters.
#
# Departs: nothing is sent, so the ICMP a kernel would answer with (port unreachable for a UDP
# datagram, echo and timestamp replies) is neither sent nor counted (Out* counters), and
# icmp_send()'s rate limits are not modelled; ICMP errors (destination unreachable, time
# exceeded, ...) are consumed without reaching the embedded protocol's err_handler (no PMTU
# update, no socket error), and ICMPv6 neighbour discovery is consumed without ndisc_rcv()'s
# checks. No checksums are verified (CHECKSUM_UNNECESSARY), and every address is local, so no
# broadcast or multicast delivery.


cdef enum:
    IPPROTO_ICMP = 1
    IPPROTO_UDP = 17
    IPPROTO_ICMPV6 = 58
    UDP_HLEN = 8                    # sizeof(struct udphdr)
    ICMP_HLEN = 8                   # sizeof(struct icmphdr) and sizeof(struct icmp6hdr)
    NR_ICMP_TYPES = 18              # include/uapi/linux/icmp.h: ICMP_ADDRESSREPLY


cdef void udp_rcv(nm_net *n, uint32_t si, nm_udp_mib *mib, bint v6) noexcept nogil:
    """Models ``__udp4_lib_rcv()`` and ``__udp6_lib_rcv()`` where no socket is bound: a header
    that is not there is InErrors (NOT_SPECIFIED); a UDP length past the datagram, or below 8,
    is InErrors (PKT_TOO_SMALL; over IPv6 a length of 0 is the datagram's, as for jumbograms);
    the datagram is trimmed to its UDP length; then no socket takes it: NoPorts, NO_SOCKET."""
    cdef nm_skb *skb = SKB(n, si)
    cdef uint32_t ulen
    if not pskb_may_pull(skb, UDP_HLEN):
        mib.InErrors += 1
        __drop(n, si, NM_DROP_NOT_SPECIFIED)
        return
    ulen = _be16(skb_transport_hdr(n, skb) + 4)
    if v6 and ulen == 0:
        ulen = skb.len
    if ulen > skb.len or ulen < UDP_HLEN:
        mib.InErrors += 1                       # short_packet
        __drop(n, si, NM_DROP_PKT_TOO_SMALL)
        return
    pskb_trim_rcsum(n, skb, ulen)
    mib.NoPorts += 1                            # and icmp_send(ICMP_PORT_UNREACH): not sent
    __drop(n, si, NM_DROP_NO_SOCKET)


cdef void icmp_rcv(nm_net *n, uint32_t si, nm_icmp_mib *mib, bint v6) noexcept nogil:
    """Models ``icmp_rcv()`` and ``icmpv6_rcv()``: InMsgs; a message shorter than its 8-byte
    header is InErrors (NOT_SPECIFIED); then its type's InType counter (IcmpMsg); an ICMPv4
    type past NR_ICMP_TYPES is InErrors (UNHANDLED_PROTO); every other message is consumed by
    its handler (see the file's departures)."""
    cdef nm_skb *skb = SKB(n, si)
    cdef uint8_t type
    mib.InMsgs += 1
    if not pskb_may_pull(skb, ICMP_HLEN):
        mib.InErrors += 1
        __drop(n, si, NM_DROP_NOT_SPECIFIED)
        return
    type = skb_transport_hdr(n, skb)[0]
    mib.InType[type] += 1
    if not v6 and type > NR_ICMP_TYPES:
        mib.InErrors += 1
        __drop(n, si, NM_DROP_UNHANDLED_PROTO)
        return
    __kfree_skb(n, si)                          # consume_skb()
