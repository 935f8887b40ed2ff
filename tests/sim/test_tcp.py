"""The sans-I/O TCP endpoint (sim/proto/tcp.py), driven by the engine through a model pipe.

The harness joins two :class:`TcpConnection` objects by two one-way :class:`Pipe` s, each a
bottleneck rate with a drop-tail queue, a propagation delay and a deterministic loss rule.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest

from primogeni.sim.engine import Engine
from primogeni.sim.proto.tcp import (
    ACK,
    FIN,
    RST,
    SYN,
    Segment,
    TcpConfig,
    TcpConnection,
    TcpError,
)

MS = 1_000_000
SEC = 1_000_000_000
MASK = 0xFFFF_FFFF

Drop = Callable[[Segment], bool]


class Pipe:
    """One direction: a serialising link of ``rate`` bit/s, a drop-tail queue of
    ``queue_bytes`` and ``delay`` ns of propagation; ``drop(seg)`` decides other losses."""

    def __init__(
        self,
        eng: Engine,
        rate: int,
        delay: int,
        queue_bytes: int = 1 << 30,
        drop: Drop | None = None,
    ) -> None:
        self.eng = eng
        self.rate = rate
        self.delay = delay
        self.queue_bytes = queue_bytes
        self.drop = drop
        self.busy_until = 0
        self.dest: Endpoint | None = None
        self.sent: list[tuple[int, Segment]] = []  # (time offered, segment), incl. dropped
        self.dropped: list[Segment] = []
        self.queue_drops = 0
        self.delivered_bytes = 0

    def send(self, seg: Segment) -> None:
        now = self.eng.now
        self.sent.append((now, seg))
        if self.drop is not None and self.drop(seg):
            self.dropped.append(seg)
            return
        size = seg.length + seg.header_len() + 20
        start = self.busy_until if self.busy_until > now else now
        backlog = (start - now) * self.rate // (8 * SEC)
        if backlog + size > self.queue_bytes:
            self.queue_drops += 1
            self.dropped.append(seg)
            return
        self.busy_until = start + size * 8 * SEC // self.rate
        self.eng.schedule(self.busy_until + self.delay, self._arrive, seg)

    def _arrive(self, seg: Segment) -> None:
        self.delivered_bytes += seg.length
        assert self.dest is not None
        self.dest.receive(seg)

    def data_segments(self) -> list[Segment]:
        return [s for _, s in self.sent if s.length]


class Endpoint:
    """Drives one connection: drains ``out`` into a pipe and keeps one timer event armed."""

    def __init__(self, eng: Engine, conn: TcpConnection, pipe: Pipe) -> None:
        self.eng = eng
        self.conn = conn
        self.pipe = pipe
        self.armed: int | None = None
        self.events: list[tuple[int, str]] = []
        self.states: list[str] = [conn.state]
        self.segments = 0  # segments handed to on_segment
        self.check_cwnd = False  # assert new data stays within SND.UNA + cwnd (+ RFC 3042)
        self.highest = 0
        conn.on_event = lambda what, c: self.events.append((eng.now, what))

    def flush(self) -> None:
        conn = self.conn
        if conn.out:
            out = conn.out
            conn.out = []
            for seg in out:
                assert seg.length <= conn.config.mss
                if self.check_cwnd and seg.length:
                    end = ((seg.seq - conn.iss) & MASK) + seg.length
                    if end > self.highest:
                        self.highest = end
                        assert end - (1 + conn.bytes_acked) <= conn.cwnd + 2 * seg.length
                self.pipe.send(seg)
        if conn.state != self.states[-1]:
            self.states.append(conn.state)
        t = conn.next_timer
        if t is not None and (self.armed is None or t < self.armed):
            self.armed = t
            self.eng.schedule(max(t, self.eng.now), self._fire)

    def _fire(self, _: object) -> None:
        if self.armed is not None and self.armed <= self.eng.now:
            self.armed = None
        self.conn.on_timer(self.eng.now)
        self.flush()

    def receive(self, seg: Segment) -> None:
        self.segments += 1
        self.conn.on_segment(seg, self.eng.now)
        self.flush()


class Net:
    """Client ``a`` and server ``b`` over a pair of pipes."""

    def __init__(
        self,
        cfg: TcpConfig | None = None,
        *,
        cfg_b: TcpConfig | None = None,
        rate: int = 100_000_000,
        delay: int = 10 * MS,
        queue_bytes: int = 1 << 30,
        drop_ab: Drop | None = None,
        drop_ba: Drop | None = None,
        iss_a: int = 1000,
        iss_b: int = 5000,
    ) -> None:
        cfg = cfg or TcpConfig()
        self.eng = Engine()
        self.ab = Pipe(self.eng, rate, delay, queue_bytes, drop_ab)
        self.ba = Pipe(self.eng, rate, delay, queue_bytes, drop_ba)
        self.a = Endpoint(self.eng, TcpConnection(cfg, 40000, 80, iss_a), self.ab)
        self.b = Endpoint(self.eng, TcpConnection(cfg_b or cfg, 80, 40000, iss_b), self.ba)
        self.ab.dest = self.b
        self.ba.dest = self.a

    def open(self, at: int = 0) -> None:
        self.b.conn.listen()
        self.b.states.append("LISTEN")
        self.eng.schedule(at, self._connect)

    def _connect(self, _: object) -> None:
        self.a.conn.connect(self.eng.now)
        self.a.flush()

    def at(self, t: int, fn: Callable[[], object]) -> None:
        def run(_: object) -> None:
            fn()
            self.a.flush()
            self.b.flush()

        self.eng.schedule(t, run)

    def run(self, until: int) -> None:
        self.eng.run(until=until)


def drop_data(*idx: int) -> Drop:
    """Drop the data segments offered with these indices (from 0, retransmissions count)."""
    wanted = set(idx)
    count = [0]

    def rule(seg: Segment) -> bool:
        if not seg.length:
            return False
        count[0] += 1
        return count[0] - 1 in wanted

    return rule


def drop_first(pred: Callable[[Segment], bool], times: int = 1) -> Drop:
    """Drop the first ``times`` segments for which ``pred`` holds."""
    left = [times]

    def rule(seg: Segment) -> bool:
        if left[0] and pred(seg):
            left[0] -= 1
            return True
        return False

    return rule


def drop_random(p: float, seed: int) -> Drop:
    rng = random.Random(seed)
    return lambda seg: seg.length > 0 and rng.random() < p


def rel_seq(seg: Segment, iss: int) -> int:
    return (seg.seq - iss) & MASK


# ---- segments -------------------------------------------------------------------------------


def test_segment_header_len_counts_padded_options() -> None:
    assert Segment(1, 2, 0, 0, ACK, 100).header_len() == 20
    syn = Segment(1, 2, 0, 0, SYN, 100, mss=1460, wscale=7, sack_permitted=True)
    assert syn.header_len() == 32
    sack = Segment(1, 2, 0, 0, ACK, 100, sacks=((1, 2), (3, 4), (5, 6)))
    assert sack.header_len() == 20 + 4 + 24


# ---- handshake ------------------------------------------------------------------------------


def test_handshake_negotiates_mss_window_scale_and_sack() -> None:
    net = Net(TcpConfig(mss=1460), cfg_b=TcpConfig(mss=1400, rcv_buffer=1 << 20))
    net.open()
    net.run(100 * MS)
    a, b = net.a.conn, net.b.conn
    assert a.state == b.state == "ESTABLISHED"
    syn, synack, ack = (s for _, s in net.ab.sent[:1] + net.ba.sent[:1] + net.ab.sent[1:2])
    assert syn.flags == SYN and syn.mss == 1460 and syn.wscale == 7 and syn.sack_permitted
    assert synack.flags == SYN | ACK and synack.mss == 1400 and synack.wscale == 5
    assert synack.sack_permitted and synack.ack == (1000 + 1) & MASK
    assert ack.flags == ACK and ack.seq == 1001 and ack.ack == 5001
    assert ack.window == (4 << 20) >> 7  # scaled by our shift 7
    # SYN windows are never scaled
    assert syn.window == 0xFFFF and synack.window == 0xFFFF
    # the handshake yields one RTT sample on each side: 20 ms plus serialisation
    assert a.established_at is not None and b.established_at is not None
    assert a.rtt_samples and 20 * MS <= a.rtt_samples[0] < 21 * MS
    assert b.rtt_samples and 20 * MS <= b.rtt_samples[0] < 21 * MS
    assert a.cwnd == b.cwnd == 10 * 1400
    assert "established" in [w for _, w in net.a.events]


def test_options_are_dropped_when_one_side_disables_them() -> None:
    net = Net(TcpConfig(), cfg_b=TcpConfig(window_scale=False, sack=False))
    net.open()
    net.run(100 * MS)
    synack = net.ba.sent[0][1]
    assert synack.wscale is None and not synack.sack_permitted
    a = net.a.conn
    a.send(200_000, now=net.eng.now)
    net.a.flush()
    # unscaled: the client advertises at most 65535 bytes
    assert all(s.window <= 0xFFFF and s.sacks is None for _, s in net.ab.sent)
    net.run(2 * SEC)
    assert net.b.conn.delivered == 200_000


def test_lost_syns_are_resent_with_backoff_and_start_with_one_segment() -> None:
    net = Net(TcpConfig(mss=1448), drop_ab=drop_first(lambda s: bool(s.flags & SYN), 2))
    net.open()
    net.run(5 * SEC)
    a = net.a.conn
    syn_times = [t for t, s in net.ab.sent if s.flags & SYN]
    assert syn_times == [0, 1 * SEC, 3 * SEC]  # RTO 1 s, then doubled
    assert a.state == "ESTABLISHED" and a.timeouts == 2 and a.retransmits == 2
    assert a.established_at is not None and 3 * SEC < a.established_at < 3 * SEC + 30 * MS
    assert a.rtt_samples == []  # Karn: the SYN-ACK answers an ambiguous SYN
    assert a.cwnd == 1448  # RFC 5681: one segment after a lost SYN
    assert a.rto == 3 * SEC  # RFC 6298 (5.7)


def test_lost_syn_ack_is_resent_and_both_sides_establish() -> None:
    net = Net(TcpConfig(), drop_ba=drop_first(lambda s: bool(s.flags & SYN), 1))
    net.open()
    net.run(3 * SEC)
    assert net.a.conn.state == net.b.conn.state == "ESTABLISHED"
    assert sum(1 for _, s in net.ba.sent if s.flags & SYN) >= 2


def test_simultaneous_open_establishes_and_transfers() -> None:
    net = Net(TcpConfig(), iss_a=77, iss_b=99)
    net.at(0, lambda: net.a.conn.connect(0))
    net.at(0, lambda: net.b.conn.connect(0))
    net.at(100 * MS, lambda: net.a.conn.send(100_000, now=net.eng.now))
    net.at(100 * MS, lambda: net.b.conn.send(50_000, now=net.eng.now))
    net.run(2 * SEC)
    a, b = net.a.conn, net.b.conn
    assert net.a.states[:3] == ["CLOSED", "SYN_SENT", "SYN_RCVD"]
    assert a.state == b.state == "ESTABLISHED"
    assert b.delivered == 100_000 and a.delivered == 50_000


# ---- data transfer --------------------------------------------------------------------------


def _check_windows(net: Net) -> None:
    """Every data segment from ``a`` fits the window ``b`` advertised before it was sent."""
    b_iss, a_iss = net.b.conn.iss, net.a.conn.iss
    ws = net.ba.sent[0][1].wscale if net.ab.sent[0][1].wscale is not None else None
    shift = ws or 0
    edges = [
        (t, ((s.ack - a_iss) & MASK) + (s.window << (0 if s.flags & SYN else shift)))
        for t, s in net.ba.sent
        if s.flags & ACK
    ]
    k = 0
    edge = 0
    for t, seg in net.ab.sent:
        while k < len(edges) and edges[k][0] <= t:
            edge = max(edge, edges[k][1])
            k += 1
        if seg.length:
            assert rel_seq(seg, a_iss) + seg.length <= edge, (t, seg)
    assert b_iss == net.b.conn.iss


@pytest.mark.parametrize("sack", [False, True])
def test_bulk_transfer_delivers_every_byte_within_the_windows(sack: bool) -> None:
    cfg = TcpConfig(mss=1448, sack=sack, rcv_buffer=256 * 1024)
    net = Net(cfg, rate=50_000_000, delay=5 * MS, queue_bytes=30_000)
    net.open()
    net.at(30 * MS, lambda: net.a.conn.send(3_000_000, now=net.eng.now))
    net.run(5 * SEC)
    a, b = net.a.conn, net.b.conn
    assert b.delivered == a.bytes_acked == 3_000_000
    assert net.ab.queue_drops > 0  # the queue is small enough to overflow
    assert a.timeouts == 0
    _check_windows(net)
    assert "data" in {w for _, w in net.b.events}


def test_real_bytes_arrive_intact_through_losses() -> None:
    payload = random.Random(3).randbytes(400_000)
    net = Net(TcpConfig(mss=1000), drop_ab=drop_random(0.03, seed=5))
    net.open()
    chunks: list[bytes] = []
    net.at(30 * MS, lambda: net.a.conn.send(len(payload), payload, now=net.eng.now))
    for i in range(1, 60):
        net.at(i * 50 * MS, lambda: chunks.append(net.b.conn.read()))
    net.run(3 * SEC)
    chunks.append(net.b.conn.read())
    assert b"".join(chunks) == payload
    assert net.a.conn.retransmits > 0
    assert all(s.data is not None and len(s.data) == s.length for s in net.ab.data_segments())


def test_sequence_numbers_wrap_around_2_32() -> None:
    payload = random.Random(4).randbytes(300_000)
    net = Net(
        TcpConfig(mss=1448),
        iss_a=MASK - 100_000,
        iss_b=MASK,
        drop_ab=drop_data(20, 60, 61, 100),
    )
    net.open()
    got: list[bytes] = []
    net.at(30 * MS, lambda: net.a.conn.send(len(payload), payload, now=net.eng.now))
    net.at(30 * MS, lambda: net.b.conn.send(1000, now=net.eng.now))
    net.run(3 * SEC)
    got.append(net.b.conn.read())
    assert b"".join(got) == payload
    assert net.a.conn.delivered == 1000
    seqs = [s.seq for s in net.ab.data_segments()]
    assert all(0 <= q <= MASK for q in seqs)
    assert min(seqs) < 200_000 and max(seqs) > MASK - 100_000  # it did wrap
    assert any(s.sacks for _, s in net.ba.sent)  # SACK edges wrapped too
    assert net.a.conn.timeouts == 0


def test_slow_start_grows_one_mss_per_ack() -> None:
    cfg = TcpConfig(mss=1000, delayed_ack=False)
    net = Net(cfg, rate=1_000_000_000, delay=10 * MS)
    net.open()
    net.at(30 * MS, lambda: net.a.conn.send(100_000, now=net.eng.now))
    net.run(30 * MS + 21 * MS)  # one round trip of data: 10 ACKs back
    assert net.a.conn.cwnd == 20 * 1000
    cfg = TcpConfig(mss=1000, delayed_ack=True)
    net = Net(cfg, rate=1_000_000_000, delay=10 * MS)
    net.open()
    net.at(30 * MS, lambda: net.a.conn.send(100_000, now=net.eng.now))
    net.run(30 * MS + 21 * MS)  # 5 delayed ACKs, each for two segments
    assert net.a.conn.cwnd == 15 * 1000


# ---- loss recovery --------------------------------------------------------------------------


def _transfer(sack: bool, drops: Drop, nbytes: int = 1_000_000, **kw: int) -> Net:
    cfg = TcpConfig(mss=1448, sack=sack, **kw)  # type: ignore[arg-type]
    net = Net(cfg, rate=10_000_000, delay=10 * MS, drop_ab=drops)
    net.open()
    net.at(50 * MS, lambda: net.a.conn.send(nbytes, now=net.eng.now))
    net.run(5 * SEC)
    assert net.b.conn.delivered == nbytes
    return net


def _resent(net: Net) -> list[tuple[int, int]]:
    """(time, relative seq) of each data segment sent more than once."""
    seen: set[int] = set()
    out = []
    for t, s in net.ab.sent:
        if s.length:
            q = rel_seq(s, net.a.conn.iss)
            if q in seen:
                out.append((t, q))
            seen.add(q)
    return out


@pytest.mark.parametrize("sack", [False, True])
def test_one_loss_is_repaired_by_exactly_one_fast_retransmit(sack: bool) -> None:
    net = _transfer(sack, drop_data(30))
    a = net.a.conn
    assert (a.fast_retransmits, a.retransmits, a.timeouts) == (1, 1, 0)
    lost = rel_seq(net.ab.dropped[0], a.iss)
    assert [q for _, q in _resent(net)] == [lost]
    assert a.ssthresh < 2**31 - 1 and a.cwnd >= a.ssthresh


def test_newreno_repairs_three_losses_with_partial_acks() -> None:
    net = _transfer(False, drop_data(30, 33, 36))
    a = net.a.conn
    assert (a.fast_retransmits, a.retransmits, a.timeouts) == (1, 3, 0)
    times = [t for t, _ in _resent(net)]
    # one repair per round trip (20 ms + queueing): each partial ACK reveals the next hole
    assert times[1] - times[0] >= 20 * MS and times[2] - times[1] >= 20 * MS


def test_sack_repairs_three_losses_in_one_round_trip() -> None:
    net = _transfer(True, drop_data(30, 33, 36))
    a = net.a.conn
    assert (a.fast_retransmits, a.retransmits, a.timeouts) == (1, 3, 0)
    times = [t for t, _ in _resent(net)]
    assert a.srtt is not None and times[2] - times[0] < a.srtt  # all within one round trip
    assert sorted(q for _, q in _resent(net)) == sorted(rel_seq(s, a.iss) for s in net.ab.dropped)


def test_sack_resends_a_lost_retransmission_without_a_timeout() -> None:
    seen: list[int] = []

    def rule(seg: Segment) -> bool:  # drop segment 30 and its first retransmission
        if not seg.length:
            return False
        seen.append(seg.seq)
        return len(seen) - 1 == 30 or (len(seen) > 31 and seg.seq == seen[30] and seen.count(seg.seq) == 2)

    net = _transfer(True, rule)
    a = net.a.conn
    assert a.timeouts == 0 and a.fast_retransmits == 1 and a.retransmits == 2


@pytest.mark.parametrize("lt", [True, False])
def test_limited_transmit_turns_a_small_window_loss_into_fast_retransmit(lt: bool) -> None:
    net = _transfer(False, drop_data(0), nbytes=10 * 1448, initial_cwnd=3, limited_transmit=lt)
    a = net.a.conn
    if lt:
        assert (a.fast_retransmits, a.timeouts) == (1, 0)
    else:  # two duplicate ACKs only: the timer must repair it
        assert (a.fast_retransmits, a.timeouts) == (0, 1)


def test_tail_loss_times_out_with_backoff_and_karn() -> None:
    # 10 segments; the last one and its first retransmission are lost
    net = _transfer(False, drop_data(9, 10), nbytes=10 * 1448)
    a = net.a.conn
    assert a.timeouts == 2 and a.fast_retransmits == 0 and a.retransmits == 2
    (t1, q1), (t2, q2) = _resent(net)
    first = next(t for t, s in net.ab.sent if s.length and rel_seq(s, a.iss) == q1)
    assert q1 == q2 == 1 + 9 * 1448
    assert t1 - first > SEC  # one RTO (1 s) after the last ACK, which came ~20 ms later
    assert t2 - t1 == 2 * SEC  # the RTO (min 1 s) doubled
    assert a.cwnd <= 2 * 1448 and a.ssthresh == 2 * 1448
    # Karn: the ACK of the retransmitted segment gives no sample; the RTO stays backed off
    samples = list(a.rtt_samples)
    assert all(r < 100 * MS for r in samples)
    assert a.rto == 4 * SEC
    net.at(net.eng.now, lambda: a.send(1448, now=net.eng.now))
    net.run(net.eng.now + SEC)
    assert len(a.rtt_samples) == len(samples) + 1
    assert a.rto == SEC  # a fresh sample recomputes it (clamped at min_rto)


def test_rto_follows_rfc6298_arithmetic() -> None:
    cfg = TcpConfig(mss=1000, min_rto=MS, sack=False)
    c = TcpConnection(cfg, 1, 2, iss=0)
    c.connect(0)
    (syn,) = c.out
    c.out.clear()
    peer_iss = 500

    def ack(t: int, acked: int) -> None:
        c.on_segment(Segment(2, 1, peer_iss + 1, (acked + 1) & MASK, ACK, 1000), t)

    c.on_segment(Segment(2, 1, peer_iss, 1, SYN | ACK, 65535, mss=1000, wscale=0), 100 * MS)
    assert c.state == "ESTABLISHED"
    srtt, rttvar = 100 * MS, 50 * MS
    assert (c.srtt, c.rttvar, c.rto) == (srtt, rttvar, srtt + 4 * rttvar)
    t, sent = 100 * MS, 0
    for r in (60 * MS, 200 * MS, 90 * MS, 90 * MS):
        c.send(1000, now=t)
        sent += 1000
        assert c.next_timer == t + c.rto
        ack(t + r, sent)
        t += r
        rttvar = (3 * rttvar + abs(srtt - r)) // 4
        srtt = (7 * srtt + r) // 8
        assert (c.srtt, c.rttvar, c.rto) == (srtt, rttvar, srtt + 4 * rttvar)
    assert c.rtt_samples == [100 * MS, 60 * MS, 200 * MS, 90 * MS, 90 * MS]
    # identical samples drive RTTVAR to 0: the clock granularity G = 1 ms is the floor
    for _ in range(80):
        c.send(1000, now=t)
        sent += 1000
        ack(t + 90 * MS, sent)
        t += 90 * MS
    assert c.srtt is not None and 4 * c.rttvar < MS and c.rto == c.srtt + MS
    # min_rto clamps
    c2 = TcpConnection(TcpConfig(), 1, 2, iss=0)
    c2.connect(0)
    c2.on_segment(Segment(2, 1, peer_iss, 1, SYN | ACK, 65535, mss=1000), 10 * MS)
    assert c2.rto == SEC
    assert syn.flags == SYN


def test_max_retries_abandons_the_connection() -> None:
    established = [False]

    def rule(seg: Segment) -> bool:
        return established[0]

    net = Net(TcpConfig(max_retries=3), drop_ab=rule)
    net.open()
    net.run(100 * MS)
    established[0] = True
    net.at(100 * MS, lambda: net.a.conn.send(5000, now=net.eng.now))
    net.run(60 * SEC)
    a = net.a.conn
    assert a.state == "CLOSED" and a.error == "too many retransmissions"
    assert a.timeouts == 4 and a.retransmits == 3
    assert a.closed_at is not None
    assert a.closed_at == pytest.approx(100 * MS + (1 + 2 + 4 + 8) * SEC, abs=50 * MS)
    assert "closed" in [w for _, w in net.a.events]


# ---- windows --------------------------------------------------------------------------------


def _zero_window_net(drop_ba: Drop | None = None) -> Net:
    cfg_b = TcpConfig(mss=1000, rcv_buffer=16_000)
    net = Net(TcpConfig(mss=1000), cfg_b=cfg_b, drop_ba=drop_ba)
    net.open()
    payload = bytes(range(256)) * 250  # 64000 bytes
    net.at(30 * MS, lambda: net.a.conn.send(len(payload), payload, now=net.eng.now))
    return net


def test_zero_window_stops_the_sender_and_persist_probes_back_off() -> None:
    net = _zero_window_net()
    net.run(8 * SEC)
    a, b = net.a.conn, net.b.conn
    assert b.delivered == 16_000  # the buffer is full and nobody reads
    assert net.ba.sent[-1][1].window == 0
    probes = [t for t, s in net.ab.sent if s.length == 0 and rel_seq(s, a.iss) == a.bytes_acked]
    assert len(probes) >= 3
    gaps = [y - x for x, y in itertools.pairwise(probes)]
    assert all(g2 == 2 * g1 for g1, g2 in itertools.pairwise(gaps))  # backoff
    assert a.timeouts == 0
    got = [b.read()]
    net.b.flush()  # read() queued a window update
    for i in range(1, 40):
        net.at(8 * SEC + i * 100 * MS, lambda: got.append(net.b.conn.read()))
    net.run(13 * SEC)
    got.append(b.read())
    assert b"".join(got) == bytes(range(256)) * 250
    _check_windows(net)


def test_persist_probe_recovers_a_lost_window_update() -> None:
    zero_seen = [False]

    def lose_first_reopening(seg: Segment) -> bool:
        if seg.window == 0:
            zero_seen[0] = True
            return False
        if zero_seen[0] and seg.window > 0:
            zero_seen[0] = False
            return True
        return False

    net = _zero_window_net(drop_ba=lose_first_reopening)
    for i in range(0, 200):
        net.at(1 * SEC + i * 50 * MS, net.b.conn.read)
    net.run(30 * SEC)
    assert net.b.conn.delivered == 64_000
    assert len(net.ba.dropped) >= 1 and net.a.conn.timeouts == 0  # every reopening lost
    # after the handshake's ACK, a's only pure ACKs are zero window probes
    assert any(s.length == 0 and s.flags == ACK for _, s in net.ab.sent[2:])


def test_receiver_window_follows_free_buffer_and_scales() -> None:
    net = Net(TcpConfig(rcv_buffer=1 << 20))
    net.open()
    net.run(100 * MS)
    ack = net.ab.sent[1][1]
    assert net.ab.sent[0][1].wscale == 5  # 2**20 >> 5 fits 16 bits
    assert ack.window << 5 == 1 << 20


# ---- delayed ACKs ---------------------------------------------------------------------------


def test_delayed_ack_waits_40ms_for_a_lone_segment_and_acks_every_second() -> None:
    net = Net(TcpConfig(mss=1000), rate=1_000_000_000, delay=5 * MS)
    net.open()
    net.run(50 * MS)
    net.at(50 * MS, lambda: net.a.conn.send(1000, now=net.eng.now))
    net.run(200 * MS)
    data_t = next(t for t, s in net.ab.sent if s.length)
    arrive = data_t + 5 * MS + (1000 + 40) * 8
    acks = [t for t, s in net.ba.sent if t > data_t]
    assert acks[0] == arrive + 40 * MS
    net.at(200 * MS, lambda: net.a.conn.send(2000, now=net.eng.now))
    net.run(400 * MS)
    acks = [t for t, s in net.ba.sent if t > 200 * MS]
    assert len(acks) == 1 and acks[0] < 200 * MS + 6 * MS  # on the second segment, at once


def test_out_of_order_segments_are_acked_at_once_with_sack_blocks() -> None:
    net = Net(TcpConfig(mss=1000), rate=1_000_000_000, delay=5 * MS, drop_ab=drop_data(0))
    net.open()
    net.at(50 * MS, lambda: net.a.conn.send(4000, now=net.eng.now))
    net.run(70 * MS)
    b_iss, a_iss = net.b.conn.iss, net.a.conn.iss
    dup = [s for t, s in net.ba.sent if t > 50 * MS and (s.ack - net.a.conn.iss) & MASK == 1]
    assert len(dup) == 3  # one duplicate ACK per out-of-order segment, none delayed
    assert all((s.ack - a_iss) & MASK == 1 for s in dup)
    assert [s.sacks for s in dup] == [
        (((a_iss + 1001) & MASK, (a_iss + 2001) & MASK),),
        (((a_iss + 1001) & MASK, (a_iss + 3001) & MASK),),
        (((a_iss + 1001) & MASK, (a_iss + 4001) & MASK),),
    ]
    assert b_iss == 5000


def test_sack_blocks_list_the_most_recent_first() -> None:
    net = Net(TcpConfig(mss=1000), rate=1_000_000_000, delay=5 * MS, drop_ab=drop_data(0, 2, 4))
    net.open()
    net.at(50 * MS, lambda: net.a.conn.send(6000, now=net.eng.now))
    net.run(70 * MS)
    iss = net.a.conn.iss
    last = [s for t, s in net.ba.sent if t > 50 * MS][2]
    rel = [((lft - iss) & MASK, (r - iss) & MASK) for lft, r in last.sacks or ()]
    assert rel == [(5001, 6001), (3001, 4001), (1001, 2001)]


def test_no_delayed_ack_acks_every_segment() -> None:
    net = Net(TcpConfig(mss=1000, delayed_ack=False), rate=1_000_000_000, delay=5 * MS)
    net.open()
    net.at(50 * MS, lambda: net.a.conn.send(10_000, now=net.eng.now))
    net.run(200 * MS)
    assert len([s for t, s in net.ba.sent if t > 50 * MS]) == 10


# ---- teardown and resets --------------------------------------------------------------------


def test_active_close_then_passive_close() -> None:
    net = Net(TcpConfig(time_wait=500 * MS))
    net.open()
    net.at(30 * MS, lambda: net.a.conn.send(20_000, now=net.eng.now))  # more than cwnd
    net.at(30 * MS, lambda: net.a.conn.close(net.eng.now))
    net.run(200 * MS)
    a, b = net.a.conn, net.b.conn
    assert a.state == "FIN_WAIT_2" and b.state == "CLOSE_WAIT"
    assert b.delivered == 20_000
    fin_segs = [s for _, s in net.ab.sent if s.flags & FIN]
    assert len(fin_segs) == 1 and fin_segs[0].length > 0  # the FIN rides on the last data
    assert [w for _, w in net.b.events][-1] == "remote_closed"
    net.at(300 * MS, lambda: net.b.conn.close(net.eng.now))
    net.run(2 * SEC)
    assert net.a.states == ["CLOSED", "SYN_SENT", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT", "CLOSED"]
    assert net.b.states == ["CLOSED", "LISTEN", "SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    assert a.closed_at is not None and b.closed_at is not None
    tw = next(t for t, w in net.a.events if w == "closed")
    assert a.closed_at == tw and a.next_timer is None and b.next_timer is None
    assert a.error is None and b.error is None


def test_simultaneous_close_goes_through_closing() -> None:
    net = Net(TcpConfig(time_wait=SEC))
    net.open()
    net.at(100 * MS, lambda: net.a.conn.close(net.eng.now))
    net.at(100 * MS, lambda: net.b.conn.close(net.eng.now))
    net.run(500 * MS)
    for ep in (net.a, net.b):
        assert ep.states[-3:] == ["FIN_WAIT_1", "CLOSING", "TIME_WAIT"]
    net.run(2 * SEC)
    assert net.a.conn.state == net.b.conn.state == "CLOSED"


def test_fin_ack_together_skips_fin_wait_2() -> None:
    net = Net(TcpConfig())
    net.open()

    def close_on_fin(what: str, c: TcpConnection) -> None:
        if what == "remote_closed":
            c.close(net.eng.now)

    net.run(50 * MS)
    net.b.conn.on_event = close_on_fin
    net.at(100 * MS, lambda: net.a.conn.close(net.eng.now))
    net.run(500 * MS)
    assert net.a.states[-2:] == ["FIN_WAIT_1", "TIME_WAIT"]
    assert net.b.states[-1] == "CLOSED"


def test_lost_fin_is_retransmitted() -> None:
    net = Net(TcpConfig(), drop_ab=drop_first(lambda s: bool(s.flags & FIN)))
    net.open()
    net.at(100 * MS, lambda: net.a.conn.close(net.eng.now))
    net.run(3 * SEC)
    assert net.b.conn.state == "CLOSE_WAIT"
    assert net.a.conn.state == "FIN_WAIT_2" and net.a.conn.timeouts == 1


def test_connection_refused_by_rst() -> None:
    net = Net(TcpConfig())  # b never listens
    net.at(0, lambda: net.a.conn.connect(0))
    net.run(SEC)
    rst = net.ba.sent[0][1]
    assert rst.flags == RST | ACK and rst.ack == (net.a.conn.iss + 1) & MASK
    a = net.a.conn
    assert a.state == "CLOSED" and a.error == "connection refused" and a.closed_at is not None


def test_reset_by_peer_aborts_and_out_of_window_rst_is_ignored() -> None:
    net = Net(TcpConfig())
    net.open()
    net.at(50 * MS, lambda: net.a.conn.send(50_000, now=net.eng.now))
    net.run(80 * MS)
    a, b = net.a.conn, net.b.conn
    seq_ok = net.ba.sent[-1][1].seq
    net.a.receive(Segment(80, 40000, (seq_ok + 10_000_000) & MASK, 0, RST, 0))
    assert a.state == "ESTABLISHED"
    net.a.receive(Segment(80, 40000, seq_ok, 0, RST, 0))
    assert a.state == "CLOSED" and a.error == "reset by peer"
    assert [w for _, w in net.a.events][-1] == "closed"
    # the closed endpoint answers b's next segments with RST; b aborts too
    net.run(3 * SEC)
    assert b.state == "CLOSED" and b.error == "reset by peer"


def test_misuse_raises_tcp_error() -> None:
    c = TcpConnection(TcpConfig(), 1, 2, 0)
    c.connect(0)
    with pytest.raises(TcpError):
        c.connect(0)
    c.close(0)
    with pytest.raises(TcpError):
        c.send(10)
    with pytest.raises(TcpError):
        TcpConfig(mss=0)


# ---- performance sanity ---------------------------------------------------------------------


@pytest.mark.parametrize("sack", [False, True])
def test_fills_a_10mbps_20ms_pipe_with_a_bdp_buffer(sack: bool) -> None:
    rate, secs = 10_000_000, 10
    bdp = rate * 20 * MS // (8 * SEC)  # 25000 bytes
    net = Net(TcpConfig(mss=1448, sack=sack), rate=rate, delay=10 * MS, queue_bytes=bdp)
    net.a.check_cwnd = not sack  # in SACK recovery, pipe (not flight) is what cwnd bounds
    net.open()
    net.at(30 * MS, lambda: net.a.conn.send_forever(now=net.eng.now))
    net.run(secs * SEC)
    goodput = net.b.conn.delivered * 8 / secs
    wire_share = 1448 / (1448 + 40)
    assert goodput >= 0.9 * rate * wire_share, goodput
    assert net.ab.queue_drops > 0 and net.a.conn.timeouts == 0
    _check_windows(net)


def test_throughput_under_random_loss_is_near_mathis() -> None:
    p, rtt, mss = 0.01, 100 * MS, 1448
    cfg = TcpConfig(mss=mss, sack=False, delayed_ack=False)
    net = Net(cfg, rate=100_000_000, delay=50 * MS, drop_ab=drop_random(p, seed=11))
    net.open()
    net.at(0, lambda: net.a.conn.send_forever(now=net.eng.now))
    net.run(60 * SEC)
    goodput = net.b.conn.delivered * 8 / 60
    mathis = mss * 8 / (rtt / SEC) * 1.22 / p**0.5
    assert 0.8 * mathis <= goodput <= 1.25 * mathis, (goodput, mathis)
