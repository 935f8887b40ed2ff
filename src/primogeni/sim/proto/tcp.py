"""A sans-I/O TCP endpoint: segments and time in, segments and timer deadlines out.

:class:`TcpConnection` is a state machine in the style of h11. It never touches a socket, a
clock or an event loop. The caller feeds it :meth:`~TcpConnection.on_segment` and
:meth:`~TcpConnection.on_timer` with the current time (integer ns), drains ``out`` after each
call and (re)arms one timer for ``next_timer``. The simulator and the emulator share it.

Division of work:

* :mod:`.tcp_segment` -- flags, :class:`Segment`, :class:`TcpConfig`.
* :mod:`.tcp_sack` -- the sender's SACK scoreboard and the receiver's reassembly queue.
* :mod:`.tcp_core` -- every field of a connection; building segments and the window.
* :mod:`.tcp_sender` -- transmit loops, congestion control, recovery, RTO and persist timers.
* this module -- the API and arriving segments: handshake (RFC 9293), acceptability and
  reassembly, delayed ACKs (RFC 1122, RFC 5681 section 4.2), ACK processing, FIN and RST.

Sequence numbers are kept internally as unbounded offsets from the ISS (ours) and IRS
(theirs): our SYN is offset 0, our first data byte offset 1, our FIN offset ``1 + bytes sent``.
They are wrapped to 32 bits only when a :class:`Segment` is built, and unwrapped relative to
the nearest expected value when one arrives, so an ISS near 2**32 is harmless.

Driving it: call ``on_timer(now)`` at or after ``next_timer``. A call when nothing has expired
is a no-op, so a caller may keep one pending event per connection and only schedule an earlier
one when ``next_timer`` moves earlier (the RTO deadline moves later on every ACK).
"""

from __future__ import annotations

from primogeni.sim.proto.tcp_core import UNLIMITED
from primogeni.sim.proto.tcp_segment import (
    ACK,
    FIN,
    PSH,
    RST,
    SEQ_MASK,
    SYN,
    Segment,
    TcpConfig,
    TcpError,
)
from primogeni.sim.proto.tcp_sender import TcpSender

__all__ = [
    "ACK",
    "FIN",
    "PSH",
    "RST",
    "SYN",
    "Segment",
    "TcpConfig",
    "TcpConnection",
    "TcpError",
]

_SYNCED = frozenset(("ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT"))
_RECEIVING = frozenset(("ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2"))


class TcpConnection(TcpSender):
    """One TCP endpoint. See the module docstring for how to drive it."""

    __slots__ = ()

    def __init__(self, config: TcpConfig, local_port: int, remote_port: int, iss: int) -> None:
        super().__init__(config, local_port, remote_port, iss)

    # ---- opening ---------------------------------------------------------------------------

    def connect(self, now: int) -> None:
        """Active open: emit a SYN and enter SYN_SENT."""
        if self.state != "CLOSED" or self._snd_max:
            raise TcpError(f"connect() in state {self.state}")
        self._now = now
        self.state = "SYN_SENT"
        self._emit_syn(False)
        self._set_timer()

    def listen(self) -> None:
        """Passive open: accept the first SYN that arrives."""
        if self.state != "CLOSED" or self._snd_max:
            raise TcpError(f"listen() in state {self.state}")
        self.state = "LISTEN"
        self._passive = True

    # ---- application side ------------------------------------------------------------------

    def send(self, nbytes: int, data: bytes | None = None, now: int | None = None) -> None:
        """Queue ``nbytes`` of application data; ``data=None`` sends synthetic bytes.

        Segments go out at once when the windows allow, timed at ``now`` or, if omitted, at
        the time of the latest call that took one.
        """
        if nbytes < 0 or (data is not None and len(data) != nbytes):
            raise TcpError(f"send({nbytes}) with {None if data is None else len(data)} bytes")
        if self._fin_queued or (self.state == "CLOSED" and self._snd_max):
            raise TcpError(f"send() in state {self.state} after close")
        if self._snd_end >= UNLIMITED:
            raise TcpError("send() after send_forever()")
        if now is not None:
            self._now = now
        buf = self._sndbuf
        if data is not None and buf is None:
            held = self._snd_end - max(self._snd_una, 1)
            buf = self._sndbuf = bytearray(held)
            self._sndbuf_base = self._snd_end - held
        if buf is not None:
            buf += data if data is not None else bytes(nbytes)
        self._snd_end += nbytes
        if self._snd_una:
            self._output()
            self._set_timer()

    def send_forever(self, now: int | None = None) -> None:
        """Make the send queue an unlimited source of synthetic bytes (bulk simulation)."""
        if self._sndbuf is not None or self._fin_queued:
            raise TcpError("send_forever() needs a synthetic, open send queue")
        if now is not None:
            self._now = now
        self._snd_end = UNLIMITED
        if self._snd_una:
            self._output()
            self._set_timer()

    def close(self, now: int) -> None:
        """Send a FIN after the queued data (an unlimited source stops where it has sent)."""
        self._now = now
        st = self.state
        if st in ("CLOSED", "LISTEN", "SYN_SENT"):
            if st != "CLOSED":
                self._finish(None)
            return
        if self._fin_queued:
            return
        if self._snd_end >= UNLIMITED:
            self._snd_end = max(self._snd_max, 1)
        self._fin_queued = True
        if st in ("ESTABLISHED", "SYN_RCVD"):
            self.state = "FIN_WAIT_1"
        elif st == "CLOSE_WAIT":
            self.state = "LAST_ACK"
        self._output()
        self._set_timer()

    def read(self) -> bytes:
        """Bytes received in order since the last read (``b""`` when the peer sends none).

        Freeing buffer space may append a window update to ``out`` (RFC 1122 receiver SWS
        avoidance: only when the window grows by ``min(rcv_buffer / 2, mss)`` or more).
        """
        buf = self._readbuf
        if not buf:
            return b""
        got = bytes(buf)
        buf.clear()
        if self.state in _RECEIVING:
            before = self._rcv_adv - self._rcv_nxt
            free = self.config.rcv_buffer - self._ooo.bytes
            if free - before >= min(self.config.rcv_buffer // 2, self._smss):
                self._send_ack()
        return got

    # ---- network side ----------------------------------------------------------------------

    def on_segment(self, seg: Segment, now: int) -> None:
        """Process one arriving segment (already demultiplexed to this connection)."""
        self._now = now
        st = self.state
        if st in _SYNCED or st == "SYN_RCVD":
            self._on_synchronized(seg)
        elif st == "LISTEN":
            self._on_listen(seg)
        elif st == "SYN_SENT":
            self._on_syn_sent(seg)
        else:
            self._on_closed(seg)
        self._set_timer()

    def on_timer(self, now: int) -> None:
        """Run whichever timers have expired by ``now``; a no-op if none has."""
        self._now = now
        t = self._tw_at
        if t is not None and now >= t:
            self._tw_at = None
            self.state = "CLOSED"
        t = self._delack_at
        if t is not None and now >= t:
            self._send_ack()
        t = self._rto_at
        if t is not None and now >= t:
            self._rto_at = None
            self._on_rto()
        t = self._persist_at
        if t is not None and now >= t:
            self._persist_at = None
            self._on_persist()
        self._set_timer()

    # ---- segment arrival, by state ---------------------------------------------------------

    def _on_closed(self, seg: Segment) -> None:
        if not seg.flags & RST:
            self._send_reset_for(seg)

    def _on_listen(self, seg: Segment) -> None:
        fl = seg.flags
        if fl & RST:
            return
        if fl & ACK:
            self._send_reset_for(seg)
            return
        if not fl & SYN:
            return
        self._take_syn(seg)
        self.state = "SYN_RCVD"
        self._emit_syn(True)

    def _on_syn_sent(self, seg: Segment) -> None:
        fl = seg.flags
        if fl & ACK and (seg.ack - self.iss) & SEQ_MASK != 1:
            if not fl & RST:
                self._send_reset_for(seg)
            return
        if fl & RST:
            if fl & ACK:
                self._finish("connection refused")
            return
        if not fl & SYN:
            return
        self._take_syn(seg)
        if fl & ACK:
            self._snd_wl1 = 0
            self._snd_wl2 = 1
            self._ack_syn()
            self._send_ack()
            self._output()
        else:  # simultaneous open
            self.state = "SYN_RCVD"
            self._emit_syn(True, retransmit=True)

    def _on_synchronized(self, seg: Segment) -> None:
        fl = seg.flags
        rn = self._rcv_nxt
        d = (seg.seq - self.irs - rn) & SEQ_MASK
        seq = rn + (d - 0x1_0000_0000 if d & 0x8000_0000 else d)
        n = seg.length
        data = seg.data
        ack_now = False
        if fl & SYN:
            if seq != 0:  # a new SYN inside a synchronized connection: challenge ACK
                self._send_ack()
                return
            seq = 1  # the peer's SYN again: drop it, keep the rest
            fl &= ~SYN
            if self.state == "SYN_RCVD":
                if not fl & ACK:
                    self._emit_syn(True, retransmit=True)
                    return
            else:
                ack_now = True  # our ACK of its SYN was lost
        fin = fl & FIN
        seglen = n + fin
        wnd = self._rcv_adv - rn
        if wnd < 0:
            wnd = 0
        if fl & RST:
            if rn <= seq < rn + max(wnd, 1):
                self._on_reset()
            return
        if seglen:
            if wnd == 0 or seq >= rn + wnd or seq + seglen <= rn:
                n = fin = seglen = 0  # not acceptable: ACK it, use its ACK field only
                ack_now = True
        elif seq < rn:
            ack_now = True  # a window probe or keep-alive
        if fl & ACK:
            if not self._on_ack(seg, seq, seglen):
                return
        elif self.state == "SYN_RCVD":
            return
        if seglen and self.state in _RECEIVING:
            if seq < rn:
                cut = rn - seq
                if cut > n:
                    cut = n
                n -= cut
                seq += cut
                if data is not None:
                    data = data[cut:]
            if seq + n > rn + wnd:
                n = rn + wnd - seq
                fin = 0
                if data is not None:
                    data = data[:n]
            if seq == rn:
                if n:
                    ack_now = self._deliver(n, data) or ack_now
                if fin or self._rcv_fin == self._rcv_nxt:
                    self._on_fin()
                    ack_now = True
            else:
                if n:
                    self._ooo.add(seq, seq + n, data)
                if fin:
                    self._rcv_fin = seq + n
                ack_now = True
        elif fin or (seglen and self.state == "TIME_WAIT"):
            ack_now = True
        if self.state == "TIME_WAIT" and fl & FIN:
            self._tw_at = self._now + self.config.time_wait
        self._output()
        if ack_now:
            if self.state == "SYN_RCVD":
                self._emit_syn(True, retransmit=True)
            elif self.state != "CLOSED":
                self._send_ack()

    # ---- the receive half ------------------------------------------------------------------

    def _deliver(self, n: int, data: bytes | None) -> bool:
        """Accept ``n`` in-order bytes at RCV.NXT; True when an ACK must go out at once."""
        ooo = self._ooo
        urgent = bool(ooo)  # it fills (part of) a hole: RFC 5681 says ACK immediately
        self._rcv_nxt += n
        if data is not None:
            self._readbuf += data
        got = n
        while ooo:
            ready = ooo.pop_ready(self._rcv_nxt)
            if ready is None:
                break
            end, more = ready
            if end > self._rcv_nxt:
                got += end - self._rcv_nxt
                self._rcv_nxt = end
                if more is not None:
                    self._readbuf += more
        self.delivered += got
        if self.on_event is not None:
            self.on_event("data", self)
        if urgent or not self.config.delayed_ack:
            return True
        self._ack_pending += 1
        if self._ack_pending >= 2:
            return True
        if self._delack_at is None:
            self._delack_at = self._now + self.config.delack_timeout
        return False

    def _on_fin(self) -> None:
        self._rcv_nxt += 1
        self._rcv_fin = -1
        st = self.state
        if st == "ESTABLISHED":
            self.state = "CLOSE_WAIT"
        elif st == "FIN_WAIT_1":
            if self._fin_queued and self._snd_una > self._snd_end:
                self._enter_time_wait()
            else:
                self.state = "CLOSING"
        elif st == "FIN_WAIT_2":
            self._enter_time_wait()
        if self.on_event is not None:
            self.on_event("remote_closed", self)

    def _on_reset(self) -> None:
        st = self.state
        if st == "SYN_RCVD" and self._passive:
            self._reset_to_listen()
        elif st in ("CLOSING", "LAST_ACK", "TIME_WAIT"):
            self._finish(None)
        elif st == "SYN_RCVD":
            self._finish("connection refused")
        else:
            self._finish("reset by peer")

    # ---- the send half: ACK arrival --------------------------------------------------------

    def _on_ack(self, seg: Segment, seq: int, seglen: int) -> bool:
        """Process the ACK field; False when the segment must be dropped."""
        una = self._snd_una
        d = (seg.ack - self.iss - una) & SEQ_MASK
        a = una + (d - 0x1_0000_0000 if d & 0x8000_0000 else d)
        if una == 0:  # SYN_RCVD, or a FIN queued before our SYN was acked
            if not 0 < a <= self._snd_max:
                self._send_reset_for(seg)
                return False
            self._snd_wl1 = 1
            self._snd_wl2 = 1
            self._ack_syn()
            una = 1
        if a > self._snd_max:
            self._send_ack()
            return False
        if a < una:
            return True  # an old duplicate ACK
        wire_wnd = seg.window
        same_wnd = wire_wnd == self._snd_wnd_raw
        if seq > self._snd_wl1 or (seq == self._snd_wl1 and a >= self._snd_wl2):
            self._snd_wl1 = seq
            self._snd_wnd_raw = wire_wnd
            wnd = wire_wnd << self._snd_ws
            self._snd_wnd = wnd
            self._snd_wl2 = a
            if wnd > self._max_sndwnd:
                self._max_sndwnd = wnd
            if wnd and self._persist_at is not None and a + wnd > self._snd_nxt:
                self._persist_at = None
                self._persist_n = 0
        sacks = seg.sacks
        if a > una:
            self._on_new_ack(a, sacks)
        elif sacks is not None and self._sack_ok:
            self._take_sacks(sacks)
            if seglen == 0 and same_wnd and self._snd_max > una:
                self._on_dupack()
        elif seglen == 0 and same_wnd and self._snd_max > una:
            self._on_dupack()
        if self._fin_queued and self._snd_una > self._snd_end:
            st = self.state
            if st == "FIN_WAIT_1":
                self.state = "FIN_WAIT_2"
            elif st == "CLOSING":
                self._enter_time_wait()
            elif st == "LAST_ACK":
                self._finish(None)
                return False
        return True

    def _ack_syn(self) -> None:
        """Our SYN is acknowledged: the connection is established."""
        self._snd_una = 1
        if self._snd_nxt < 1:
            self._snd_nxt = 1
        now = self._now
        if self._rtt_seq == 1:
            self._rtt_sample(now - self._rtt_time)
        self._rtt_seq = -1
        smss = self._smss
        self.cwnd = smss if self._syn_retx else self.config.initial_cwnd * smss
        if self._syn_retx and self.srtt is None:
            self.rto = min(max(3_000_000_000, self.config.initial_rto), self.config.max_rto)
        self._backoff = 0
        self._rto_at = None
        if self.state in ("SYN_RCVD", "SYN_SENT"):
            self.state = "ESTABLISHED"
        self.established_at = now
        if self.on_event is not None:
            self.on_event("established", self)
