"""Congestion control, loss recovery and the timers that retransmit, for a TCP endpoint.

:class:`TcpSender` extends :class:`~primogeni.sim.proto.tcp_core.TcpCore` (state and segment
building) with what decides *when* and *what* to send: the window-limited transmit loop, the
RFC 6675 pipe-limited loop during SACK recovery, slow start and congestion avoidance (RFC
5681), NewReno fast recovery (RFC 6582), limited transmit (RFC 3042), RTT estimation and the
retransmission timer (RFC 6298, Karn), and the persist timer. The scoreboard work is O(holes)
per ACK (see :mod:`.tcp_sack`), never O(window).
"""

from __future__ import annotations

from primogeni.sim.proto.tcp_core import CLOCK_GRANULARITY, SENDING_STATES, TcpCore
from primogeni.sim.proto.tcp_segment import ACK, FIN, SEQ_MASK, SackBlocks, Segment


class TcpSender(TcpCore):
    """The sending half's decisions; state lives in :class:`TcpCore`."""

    __slots__ = ()

    # ---- transmit loops --------------------------------------------------------------------

    def _output(self) -> None:
        """Send what the congestion and receive windows allow."""
        una = self._snd_una
        if una == 0 or self.state not in SENDING_STATES:
            return
        if self._snd_nxt >= self._snd_end and not self._fin_queued:
            return  # nothing to send (the receiving side of a one-way transfer)
        if self._in_recovery and self._sack_ok:
            self._sack_output()
            return
        smss = self._smss
        end = self._snd_end
        limit = una + self.cwnd
        if self._dupacks and not self._in_recovery and self.config.limited_transmit:
            limit += smss if self._dupacks == 1 else 2 * smss  # RFC 3042
        wedge = self._snd_wl2 + self._snd_wnd
        if wedge < limit:
            limit = wedge
        fin = FIN if self._fin_queued else 0
        s = self._snd_nxt
        while True:
            if s < end:
                n = end - s
                if n > smss:
                    n = smss
                room = limit - s
                if room < n:
                    # Sender SWS avoidance (RFC 1122 4.2.3.4): no runts unless they are
                    # at least half the largest window the peer has offered.
                    if room <= 0 or room < self._max_sndwnd >> 1:
                        break
                    n = room
                f = fin if s + n == end else 0
                self._emit_data(s, n, f)
                s += n + f
            elif fin and s == end:
                self._emit_data(s, 0, FIN)
                s += 1
            else:
                break
        if self._snd_max == una and s < end and self._persist_at is None:
            self._persist_at = self._now + min(self.rto << self._persist_n, self.config.max_rto)

    def _sack_output(self) -> None:
        """RFC 6675 section 5 step (C): send while cwnd - pipe >= SMSS, choosing by NextSeg()."""
        smss = self._smss
        sb = self._sb
        end = self._snd_end
        fin = FIN if self._fin_queued else 0
        wedge = self._snd_wl2 + self._snd_wnd
        while self.cwnd - self._pipe >= smss:
            hr = self._high_rxt
            if hr < self._snd_una:
                hr = self._snd_una
            hole = sb.next_hole(hr)
            if hole is not None and hole[0] < self._lost_edge:  # rule 1: a lost hole
                self._resend_hole(hole[0], hole[1])
                continue
            s = self._snd_nxt
            if s < end:  # rule 2: new data
                n = end - s
                if n > smss:
                    n = smss
                if wedge - s >= n:
                    f = fin if s + n == end else 0
                    self._emit_data(s, n, f)
                    self._pipe += n + f
                    continue
            elif fin and s == end:
                self._emit_data(s, 0, FIN)
                self._pipe += 1
                continue
            if hole is not None:  # rule 3: a hole not yet deemed lost
                self._resend_hole(hole[0], hole[1])
                continue
            break

    def _resend_hole(self, s: int, e: int) -> None:
        n = e - s
        if n > self._smss:
            n = self._smss
        self._rxt_marks[s] = self._snd_max
        self._emit_data(s, n, 0)
        if s + n > self._high_rxt:
            self._high_rxt = s + n
        self._pipe += n

    def _check_lost_retransmit(self) -> None:
        """Resend the segment at SND.UNA if its retransmission was lost.

        RFC 6675 leaves a lost retransmission to the RTO. Like Linux, we deem it lost when
        more than DupThresh-1 segments sent after it have been SACKed, and send it again.
        """
        una = self._snd_una
        mark = self._rxt_marks.get(una)
        sb = self._sb
        if mark is None or not sb.starts:
            return
        if sb.sacked - sb.sacked_below(mark) > 2 * self._smss:
            self._resend_hole(una, sb.starts[0])

    def _recompute_pipe(self) -> None:
        """RFC 6675 SetPipe(), from the scoreboard in O(holes) rather than per octet."""
        sb = self._sb
        una = self._snd_una
        le = sb.lost_edge(una, 2 * self._smss) if sb.starts else una
        self._lost_edge = le
        pipe = self._snd_max - una - sb.sacked
        if le > una:
            pipe -= le - una - sb.sacked_below(le)
        hr = self._high_rxt
        if hr > una:
            pipe += hr - una - sb.sacked_below(hr)
        self._pipe = pipe

    # ---- ACK arrival -----------------------------------------------------------------------

    def _take_sacks(self, sacks: SackBlocks) -> None:
        una = self._snd_una
        mx = self._snd_max
        base = self.iss + una
        sb = self._sb
        for left, right in sacks:
            d = (left - base) & SEQ_MASK
            lo = una + (d - 0x1_0000_0000 if d & 0x8000_0000 else d)
            hi = lo + ((right - left) & SEQ_MASK)
            if hi <= una or hi > mx or hi <= lo:
                continue  # stale, a D-SACK, or bogus
            sb.add(lo if lo > una else una, hi)

    def _on_new_ack(self, a: int, sacks: SackBlocks | None) -> None:
        una = self._snd_una
        acked = a - una
        flight = self._snd_max - una
        end = self._snd_end
        lo = una if una > 1 else 1
        hi = a if a < end else end
        if hi > lo:
            self.bytes_acked += hi - lo
        self._snd_una = a
        if self._snd_nxt < a:
            self._snd_nxt = a
        buf = self._sndbuf
        if buf is not None:
            k = hi - self._sndbuf_base
            if k > 0:
                del buf[:k]
                self._sndbuf_base += k
        if 0 <= self._rtt_seq <= a:
            self._rtt_sample(self._now - self._rtt_time)
            self._rtt_seq = -1
        self._backoff = 0
        self._persist_n = 0
        sack_ok = self._sack_ok
        if sack_ok:
            if self._sb.starts:
                self._sb.trim(a)
            if sacks is not None:
                self._take_sacks(sacks)
        smss = self._smss
        restart = True
        if self._in_recovery:
            if a >= self._recover:  # full ACK: recovery ends
                self._in_recovery = False
                self._rxt_marks.clear()
                self._dupacks = 0
                self._ca_acc = 0
                if sack_ok:
                    self.cwnd = self.ssthresh
                else:  # RFC 6582 3.2 step 3, option (1)
                    self.cwnd = min(self.ssthresh, max(self._snd_max - a, smss) + smss)
            elif sack_ok:
                if self._high_rxt < a:
                    self._high_rxt = a
                self._recompute_pipe()
                self._check_lost_retransmit()
            else:  # NewReno partial ACK (RFC 6582 3.2 step 5)
                self._retransmit_at(a, self._snd_max)
                cwnd = self.cwnd - acked
                if acked >= smss:
                    cwnd += smss
                self.cwnd = cwnd if cwnd > smss else smss
                restart = not self._partial_seen  # "impatient" variant
                self._partial_seen = True
        else:
            self._dupacks = 0
            cwnd = self.cwnd
            if cwnd < self.ssthresh:
                if 2 * flight >= cwnd:  # grow only while cwnd limits the sender
                    cwnd += acked if acked < smss else smss
            elif flight + smss >= cwnd:
                ca = self._ca_acc + acked  # byte counting (RFC 5681 3.1)
                if ca >= cwnd:
                    ca -= cwnd
                    cwnd += smss
                self._ca_acc = ca
            self.cwnd = cwnd
        if self._snd_max > a:
            if restart:
                self._rto_at = self._now + self.rto
        else:
            self._rto_at = None

    def _on_dupack(self) -> None:
        self._dupacks += 1
        sack_ok = self._sack_ok
        if self._in_recovery:
            if sack_ok:
                self._recompute_pipe()
                self._check_lost_retransmit()
            else:
                self.cwnd += self._smss  # RFC 6582 3.2 step 4
            return
        if self._snd_una < self._recover:
            return  # RFC 6582 step 2: duplicates of data sent before the last RTO
        if self._dupacks >= 3:
            self._enter_recovery()
        elif sack_ok and self._sb.starts and self._sb.lost_edge(self._snd_una, 2 * self._smss) > self._snd_una:
            self._enter_recovery()  # RFC 6675 IsLost(HighACK + 1)

    def _enter_recovery(self) -> None:
        una = self._snd_una
        smss = self._smss
        ss = (self._snd_max - una) >> 1
        self.ssthresh = ss if ss > 2 * smss else 2 * smss
        self._recover = self._snd_max
        self._in_recovery = True
        self._partial_seen = False
        self._rtt_seq = -1  # the timed segment's ACK would wait for the repair
        self.fast_retransmits += 1
        if self._sack_ok:
            self.cwnd = self.ssthresh
            sb = self._sb
            self._high_rxt = una
            self._rxt_marks[una] = self._snd_max
            self._retransmit_at(una, sb.starts[0] if sb.starts else self._snd_max)
            self._recompute_pipe()
        else:
            self._retransmit_at(una, self._snd_max)
            self.cwnd = self.ssthresh + 3 * smss

    def _rtt_sample(self, r: int) -> None:
        """RFC 6298 section 2, in integer ns."""
        self.rtt_samples.append(r)
        srtt = self.srtt
        if srtt is None:
            srtt = r
            self.rttvar = r >> 1
        else:
            self.rttvar = (3 * self.rttvar + abs(srtt - r)) >> 2
            srtt = (7 * srtt + r) >> 3
        self.srtt = srtt
        k = 4 * self.rttvar
        rto = srtt + (k if k > CLOCK_GRANULARITY else CLOCK_GRANULARITY)
        cfg = self.config
        self.rto = cfg.min_rto if rto < cfg.min_rto else min(rto, cfg.max_rto)

    # ---- timers ----------------------------------------------------------------------------

    def _on_rto(self) -> None:
        cfg = self.config
        una = self._snd_una
        if una == 0:
            if self.state not in ("SYN_SENT", "SYN_RCVD"):
                return
        elif self._snd_max <= una:
            return
        self._backoff += 1
        self.timeouts += 1
        if self._backoff > cfg.max_retries:
            self._finish("too many retransmissions")
            return
        self.rto = min(self.rto * 2, cfg.max_rto)
        self._rtt_seq = -1
        if una == 0:
            self._syn_retx = True
            self.retransmits += 1
            self._emit_syn(self.state == "SYN_RCVD", retransmit=True)
            return
        smss = self._smss
        if self._backoff == 1:  # RFC 5681 (4): only the first expiry sets ssthresh
            ss = (self._snd_max - una) >> 1
            self.ssthresh = ss if ss > 2 * smss else 2 * smss
        self.cwnd = smss
        self._ca_acc = 0
        self._recover = self._snd_max
        self._in_recovery = False
        self._dupacks = 0
        self._sb.clear()  # RFC 2018 section 8: the receiver may have reneged
        self._rxt_marks.clear()
        self._high_rxt = una
        self._snd_nxt = una  # go back N, in slow start
        self._retransmit_at(una, self._snd_max)

    def _on_persist(self) -> None:
        una = self._snd_una
        if una == 0 or self.state not in SENDING_STATES or self._snd_max > una:
            return
        s = self._snd_nxt
        end = self._snd_end
        if s >= end:
            return
        self._persist_n += 1
        room = self._snd_wl2 + self._snd_wnd - s
        if room > 0:  # a small window: send into it anyway (RFC 1122 4.2.3.4 (d))
            n = min(self._smss, end - s, room)
            self._emit_data(s, n, FIN if self._fin_queued and s + n == end else 0)
            return
        # A zero window probe: an old sequence number draws an ACK with the current window.
        self.out.append(
            Segment(
                self.local_port,
                self.remote_port,
                (self.iss + una - 1) & SEQ_MASK,
                (self.irs + self._rcv_nxt) & SEQ_MASK,
                ACK,
                self._window(),
            )
        )
        self._persist_at = self._now + min(self.rto << self._persist_n, self.config.max_rto)
