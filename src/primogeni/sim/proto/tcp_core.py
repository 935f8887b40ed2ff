"""The state and the sending machinery of a TCP endpoint, below :mod:`.tcp`.

:class:`TcpCore` holds every field of a connection and implements what makes segments leave:
building segments and the advertised window, the transmit loops (window-limited, and the RFC
6675 pipe-limited loop during SACK recovery), congestion control on ACK arrival, fast recovery,
the retransmission and persist timers. :class:`~primogeni.sim.proto.tcp.TcpConnection` adds the
public API and the processing of arriving segments. Offsets are unbounded (see :mod:`.tcp`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from primogeni.sim.proto.tcp_sack import OutOfOrderQueue, Scoreboard
from primogeni.sim.proto.tcp_segment import (
    ACK,
    FIN,
    PSH,
    RST,
    SEQ_MASK,
    SYN,
    SackBlocks,
    Segment,
    TcpConfig,
)

if TYPE_CHECKING:
    from primogeni.sim.proto.tcp import TcpConnection

UNLIMITED = 1 << 62  # the end of the send queue of send_forever()
INITIAL_SSTHRESH = 0x7FFF_FFFF  # "arbitrarily high" (RFC 5681)
CLOCK_GRANULARITY = 1_000_000  # G of RFC 6298, ns
_SENDING = frozenset(("ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT_1", "CLOSING", "LAST_ACK"))


def _scale_for(buffer: int) -> int:
    """The smallest window shift that lets a 16-bit field cover ``buffer`` (at most 14)."""
    ws = 0
    while ws < 14 and buffer >> ws > 0xFFFF:
        ws += 1
    return ws


class TcpCore:
    """Connection state plus segment emission, congestion control and timers."""

    __slots__ = (
        "_ack_pending",
        "_backoff",
        "_ca_acc",
        "_delack_at",
        "_dupacks",
        "_fin_queued",
        "_high_rxt",
        "_in_recovery",
        "_lost_edge",
        "_max_sndwnd",
        "_now",
        "_ooo",
        "_partial_seen",
        "_passive",
        "_persist_at",
        "_persist_n",
        "_pipe",
        "_rcv_adv",
        "_rcv_fin",
        "_rcv_nxt",
        "_rcv_ws",
        "_readbuf",
        "_recover",
        "_rto_at",
        "_rtt_seq",
        "_rtt_time",
        "_rxt_marks",
        "_sack_ok",
        "_sb",
        "_smss",
        "_snd_end",
        "_snd_max",
        "_snd_nxt",
        "_snd_una",
        "_snd_wl1",
        "_snd_wl2",
        "_snd_wnd",
        "_snd_wnd_raw",
        "_snd_ws",
        "_sndbuf",
        "_sndbuf_base",
        "_syn_retx",
        "_tw_at",
        "_ws_ok",
        "bytes_acked",
        "closed_at",
        "config",
        "cwnd",
        "delivered",
        "error",
        "established_at",
        "fast_retransmits",
        "irs",
        "iss",
        "local_port",
        "next_timer",
        "on_event",
        "out",
        "remote_port",
        "retransmits",
        "rto",
        "rtt_samples",
        "rttvar",
        "srtt",
        "ssthresh",
        "state",
        "timeouts",
    )

    def __init__(self, config: TcpConfig, local_port: int, remote_port: int, iss: int) -> None:
        self.config = config
        self.local_port = local_port
        self.remote_port = remote_port
        self.iss = iss & SEQ_MASK
        self.irs = 0
        self.state = "CLOSED"
        self.out: list[Segment] = []
        self.next_timer: int | None = None
        self.on_event: Callable[[str, TcpConnection], None] | None = None
        # observation
        self.cwnd = config.initial_cwnd * config.mss
        self.ssthresh = INITIAL_SSTHRESH
        self.srtt: int | None = None
        self.rttvar = 0
        self.rto = config.initial_rto
        self.bytes_acked = 0
        self.delivered = 0
        self.retransmits = 0
        self.timeouts = 0
        self.fast_retransmits = 0
        self.rtt_samples: list[int] = []
        self.established_at: int | None = None
        self.closed_at: int | None = None
        self.error: str | None = None
        self._now = 0
        self._passive = False
        # send sequence space: offsets from the ISS
        self._snd_una = 0
        self._snd_nxt = 0
        self._snd_max = 0  # highest offset sent + 1 (snd_nxt goes back after an RTO)
        self._snd_end = 1  # end of queued app data; our FIN's offset once closing
        self._fin_queued = False
        self._sndbuf: bytearray | None = None  # real bytes from _sndbuf_base on, if any
        self._sndbuf_base = 1
        self._snd_wnd = 0  # peer's window, scaled, from SND.WL2 on
        self._snd_wnd_raw = -1  # last 16-bit window field, for the duplicate-ACK test
        self._snd_wl1 = 0
        self._snd_wl2 = 0
        self._max_sndwnd = 0
        self._smss = config.mss
        self._ws_ok = False
        self._snd_ws = 0
        self._rcv_ws = _scale_for(config.rcv_buffer) if config.window_scale else 0
        self._sack_ok = False
        # receive sequence space: offsets from the IRS
        self._rcv_nxt = 0
        self._rcv_adv = 0  # right edge of the window we advertised; never moves left
        self._rcv_fin = -1  # offset of a FIN received out of order
        self._ooo = OutOfOrderQueue()
        self._readbuf = bytearray()
        self._ack_pending = 0  # in-order segments not yet acknowledged
        # timers: absolute ns or None
        self._delack_at: int | None = None
        self._rto_at: int | None = None
        self._persist_at: int | None = None
        self._persist_n = 0
        self._tw_at: int | None = None
        self._backoff = 0  # RTO expirations in a row
        self._syn_retx = False
        self._rtt_seq = -1  # ACK offset that completes the timed segment; -1: none timed
        self._rtt_time = 0
        # loss recovery
        self._dupacks = 0
        self._in_recovery = False
        self._recover = 0  # RFC 6582 "recover", as the ACK value that ends recovery
        self._partial_seen = False
        self._ca_acc = 0  # bytes acked in congestion avoidance since the last increase
        self._sb = Scoreboard()
        self._high_rxt = 0
        self._pipe = 0
        self._lost_edge = 0
        self._rxt_marks: dict[int, int] = {}  # SACK recovery: resent offset -> SND.MAX then

    # ---- building segments -----------------------------------------------------------------

    def _window(self) -> int:
        """The 16-bit window field to send; also moves RCV.ADV (never to the left)."""
        cfg = self.config
        ws = self._rcv_ws
        rn = self._rcv_nxt
        cur = self._rcv_adv - rn
        if cur < 0:
            cur = 0
        free = cfg.rcv_buffer - self._ooo.bytes - len(self._readbuf)
        # Receiver SWS avoidance (RFC 1122 4.2.3.3): grow only by a useful amount.
        if free - cur >= min(cfg.rcv_buffer >> 1, self._smss):
            wire = free >> ws
            if wire > 0xFFFF:
                wire = 0xFFFF
            edge = rn + (wire << ws)
            if edge >= self._rcv_adv:
                self._rcv_adv = edge
                return wire
        wire = (cur + (1 << ws) - 1) >> ws
        if wire > 0xFFFF:
            wire = 0xFFFF
        edge = rn + (wire << ws)
        if edge > self._rcv_adv:
            self._rcv_adv = edge
        return wire

    def _sacks_out(self) -> SackBlocks | None:
        if self._sack_ok and self._ooo:
            return self._ooo.sack_blocks(self.irs)
        return None

    def _send_ack(self) -> None:
        self._ack_pending = 0
        self._delack_at = None
        self.out.append(
            Segment(
                self.local_port,
                self.remote_port,
                (self.iss + self._snd_nxt) & SEQ_MASK,
                (self.irs + self._rcv_nxt) & SEQ_MASK,
                ACK,
                self._window(),
                0,
                None,
                None,
                None,
                False,
                self._sacks_out(),
            )
        )

    def _send_reset_for(self, seg: Segment) -> None:
        """Answer an unacceptable segment with a RST (RFC 9293 3.10.7.1)."""
        if seg.flags & ACK:
            rst = Segment(self.local_port, self.remote_port, seg.ack, 0, RST, 0)
        else:
            n = seg.length + (1 if seg.flags & SYN else 0) + (seg.flags & FIN)
            rst = Segment(
                self.local_port, self.remote_port, 0, (seg.seq + n) & SEQ_MASK, RST | ACK, 0
            )
        self.out.append(rst)

    def _emit_syn(self, with_ack: bool, retransmit: bool = False) -> None:
        cfg = self.config
        free = cfg.rcv_buffer - self._ooo.bytes - len(self._readbuf)
        wnd = min(max(free, 0), 0xFFFF)  # never scaled in a SYN (RFC 7323 2.2)
        if with_ack:
            wscale = self._rcv_ws if self._ws_ok else None
            sackp = self._sack_ok
            ack = (self.irs + 1) & SEQ_MASK
            self._rcv_adv = max(self._rcv_adv, self._rcv_nxt + wnd)
        else:
            wscale = self._rcv_ws if cfg.window_scale else None
            sackp = cfg.sack
            ack = 0
        if retransmit or self._syn_retx:
            self._rtt_seq = -1  # Karn: an ACK of a repeated SYN gives no sample
        elif self._rtt_seq < 0:
            self._rtt_seq = 1
            self._rtt_time = self._now
        self.out.append(
            Segment(
                self.local_port,
                self.remote_port,
                self.iss,
                ack,
                SYN | ACK if with_ack else SYN,
                wnd,
                0,
                None,
                cfg.mss,
                wscale,
                sackp,
                None,
            )
        )
        self._snd_nxt = self._snd_max = max(self._snd_max, 1)
        if self._rto_at is None:
            self._rto_at = self._now + self.rto

    def _take_syn_options(self, seg: Segment) -> None:
        cfg = self.config
        self._smss = min(cfg.mss, seg.mss if seg.mss else 536)
        if cfg.window_scale and seg.wscale is not None:
            self._ws_ok = True
            self._snd_ws = min(seg.wscale, 14)
        else:
            self._ws_ok = False
            self._snd_ws = self._rcv_ws = 0
        self._sack_ok = cfg.sack and seg.sack_permitted
        self._snd_wnd = self._max_sndwnd = seg.window
        self._snd_wnd_raw = -1
        self._snd_wl1 = 0
        self._snd_wl2 = 0

    def _emit_data(self, s: int, n: int, fin: int) -> None:
        """Send ``n`` bytes at offset ``s`` (plus our FIN when ``fin``), new or again."""
        now = self._now
        if s < self._snd_max:
            self.retransmits += 1
            if s < self._rtt_seq:
                self._rtt_seq = -1  # Karn's rule
        elif self._rtt_seq < 0 and not self._in_recovery:
            self._rtt_seq = s + n + fin
            self._rtt_time = now
        data = None
        buf = self._sndbuf
        if buf is not None and n:
            off = s - self._sndbuf_base
            data = bytes(buf[off : off + n])
        flags = ACK | fin
        if n and s + n == self._snd_end:
            flags |= PSH
        sacks = self._ooo.sack_blocks(self.irs) if self._sack_ok and self._ooo else None
        self.out.append(
            Segment(
                self.local_port,
                self.remote_port,
                (self.iss + s) & SEQ_MASK,
                (self.irs + self._rcv_nxt) & SEQ_MASK,
                flags,
                self._window(),
                n,
                data,
                None,
                None,
                False,
                sacks,
            )
        )
        e = s + n + fin
        if e > self._snd_nxt:
            self._snd_nxt = e
        if e > self._snd_max:
            self._snd_max = e
        if self._rto_at is None:
            self._rto_at = now + self.rto
        self._ack_pending = 0
        self._delack_at = None

    def _retransmit_at(self, s: int, limit: int) -> None:
        """Resend one segment from ``s``, not past ``limit``."""
        end = self._snd_end
        n = min(self._smss, end - s, limit - s)
        if n < 0:
            n = 0
        fin = FIN if self._fin_queued and s + n == end and self._snd_max > end else 0
        if n or fin:
            self._emit_data(s, n, fin)
            if s + n + fin > self._high_rxt:
                self._high_rxt = s + n + fin

    # ---- transmit loops --------------------------------------------------------------------

    def _output(self) -> None:
        """Send what the congestion and receive windows allow."""
        una = self._snd_una
        if una == 0 or self.state not in _SENDING:
            return
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
        elif (
            sack_ok
            and self._sb.starts
            and self._sb.lost_edge(self._snd_una, 2 * self._smss) > self._snd_una
        ):
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
        if una == 0 or self.state not in _SENDING or self._snd_max > una:
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

    def _set_timer(self) -> None:
        t = self._rto_at
        x = self._delack_at
        if x is not None and (t is None or x < t):
            t = x
        x = self._persist_at
        if x is not None and (t is None or x < t):
            t = x
        x = self._tw_at
        if x is not None and (t is None or x < t):
            t = x
        self.next_timer = t

    # ---- endings ---------------------------------------------------------------------------

    def _enter_time_wait(self) -> None:
        self.state = "TIME_WAIT"
        self._tw_at = self._now + self.config.time_wait
        self._rto_at = self._persist_at = None
        self._closed()

    def _finish(self, error: str | None) -> None:
        """Enter CLOSED at once (reset, refusal, abandonment or a completed LAST_ACK)."""
        self.state = "CLOSED"
        if error is not None and self.error is None:
            self.error = error
        self._rto_at = self._persist_at = self._delack_at = self._tw_at = None
        self._closed()

    def _closed(self) -> None:
        if self.closed_at is None:
            self.closed_at = self._now
            if self.on_event is not None:
                self.on_event("closed", cast("TcpConnection", self))

    def _reset_to_listen(self) -> None:
        """A RST in SYN_RCVD after a passive open: forget the peer (RFC 9293 3.10.7.4)."""
        self.state = "LISTEN"
        self._snd_una = self._snd_nxt = self._snd_max = 0
        self._rcv_nxt = self._rcv_adv = 0
        self._rto_at = self._delack_at = None
        self._rtt_seq = -1
        self._syn_retx = False
        self._backoff = 0
        self.rto = self.config.initial_rto
        self._ooo.clear()
        self._readbuf.clear()
