"""The state of a TCP endpoint and the building of its segments, the base of :mod:`.tcp`.

:class:`TcpCore` holds every field of a connection and builds what leaves it: SYNs, data
segments, pure ACKs and RSTs, with the advertised window (RFC 7323 scaling, RFC 1122 receiver
SWS avoidance, never shrinking) and SACK blocks. :class:`~.tcp_sender.TcpSender` adds
congestion control, recovery and timers; :class:`~primogeni.sim.proto.tcp.TcpConnection` the
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
SENDING_STATES = frozenset(("ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT_1", "CLOSING", "LAST_ACK"))


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
        half = cfg.rcv_buffer >> 1
        if free - cur >= (half if half < self._smss else self._smss):
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
        if self._ooo.starts and self._sack_ok:
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
            rst = Segment(self.local_port, self.remote_port, 0, (seg.seq + n) & SEQ_MASK, RST | ACK, 0)
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

    def _take_syn(self, seg: Segment) -> None:
        """The peer's SYN: its ISN (so RCV.NXT is offset 1) and its options."""
        self.irs = seg.seq
        self._rcv_nxt = 1
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
        ooo = self._ooo
        sacks = ooo.sack_blocks(self.irs) if ooo.starts and self._sack_ok else None
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
