"""Applications that run the traffic a model describes, and the TCP glue between hosts and
the sans-I/O TCP state machine.

Each application keeps its figures in a :class:`~primogeni.sim.measure.FlowStats`; every
packet it sends carries that object, so drops anywhere on the path are counted to the flow.
"""

from __future__ import annotations

from heapq import heappush
from ipaddress import IPv4Address
from random import Random

from primogeni.net.packet import ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, PROTO_ICMP, PROTO_TCP, PROTO_UDP
from primogeni.sim.engine import Engine
from primogeni.sim.measure import FlowStats
from primogeni.sim.node import IcmpMessage, Packet, SimNode, UdpDatagram
from primogeni.sim.proto.tcp import TcpConfig, TcpConnection
from primogeni.sim.traffic import (
    Flow,
    Ping,
    Poisson,
    TcpBulk,
    TcpRequestResponse,
    UdpCbr,
    UdpOnOff,
)


class TcpAgent:
    """Binds a :class:`TcpConnection` to a host: sends its segments, runs its timers."""

    __slots__ = ("conn", "counter", "engine", "heap", "host", "laddr", "raddr", "stats", "timer_at")

    def __init__(self, host: SimNode, conn: TcpConnection, laddr: int, raddr: int, stats: FlowStats) -> None:
        self.host = host
        self.conn = conn
        self.laddr = laddr
        self.raddr = raddr
        self.stats = stats
        self.engine = host.engine
        self.heap = host.engine.heap
        self.counter = host.engine.counter
        self.timer_at: int | None = None
        host.tcp[(conn.local_port, raddr, conn.remote_port)] = self

    def segment(self, pkt: Packet) -> None:
        self.conn.on_segment(pkt.payload, self.engine.now)
        self.flush()

    def flush(self) -> None:
        conn = self.conn
        out = conn.out
        if out:
            host = self.host
            stats = self.stats
            laddr = self.laddr
            raddr = self.raddr
            for seg in out:
                host.output(Packet(laddr, raddr, PROTO_TCP, 20 + seg.header_len() + seg.length, seg, stats))
                stats.sent_packets += 1
            out.clear()
        nt = conn.next_timer
        if nt is not None and (self.timer_at is None or nt < self.timer_at):
            self.timer_at = nt
            heappush(self.heap, (nt, next(self.counter), self._fire, nt))

    def _fire(self, when: int) -> None:
        if when != self.timer_at:
            return  # superseded by an earlier deadline
        self.timer_at = None
        nt = self.conn.next_timer
        if nt is None:
            return
        now = self.engine.now
        if nt <= now:
            self.conn.on_timer(now)
        self.flush()

    def close(self) -> None:
        self.conn.close(self.engine.now)
        self.flush()

    def forget(self) -> None:
        self.host.tcp.pop((self.conn.local_port, self.raddr, self.conn.remote_port), None)


def _iss(rng: Random) -> int:
    return rng.getrandbits(32)


class App:
    """Base of the flow runners."""

    def __init__(self, flow: Flow, stats: FlowStats, src: SimNode, dst: SimNode, saddr: int, daddr: int,
                 engine: Engine, rng: Random, end: int) -> None:
        self.flow = flow
        self.stats = stats
        self.src = src
        self.dst = dst
        self.saddr = saddr
        self.daddr = daddr
        self.engine = engine
        self.rng = rng
        self.stop_at = min(flow.stop, end) if flow.stop is not None else end
        self.began = False

    def start(self) -> None:
        self.engine.schedule(self.flow.start, self._begin)

    def _begin(self, _: object) -> None:
        self.began = True
        self.begin()

    def begin(self, _: object = None) -> None:
        raise NotImplementedError

    def finish(self, end: int) -> None:
        """Called once at the end of the run to settle the figures."""

    def delivered_now(self) -> int:
        """Application bytes delivered so far (sampled for the time series)."""
        return self.stats.delivered


class TcpApp(App):
    """A client connection on src and its server on dst, joined by one flow's figures."""

    client: TcpAgent
    server: TcpAgent

    def _open(self, cfg: TcpConfig, port: int) -> TcpConnection:
        """Make the listening server and the (not yet connected) client; returns the client."""
        sport = self.src.ephemeral_port()
        self.stats.started = self.engine.now
        server = TcpConnection(cfg, port, sport, _iss(self.rng))
        server.listen()
        server.on_event = self._server_event
        self.server = TcpAgent(self.dst, server, self.daddr, self.saddr, self.stats)
        client = TcpConnection(cfg, sport, port, _iss(self.rng))
        client.on_event = self._client_event
        self.client = TcpAgent(self.src, client, self.saddr, self.daddr, self.stats)
        return client

    def _connect(self) -> None:
        self.client.conn.connect(self.engine.now)
        self.client.flush()

    def _client_event(self, what: str, conn: TcpConnection) -> None:
        raise NotImplementedError

    def _server_event(self, what: str, conn: TcpConnection) -> None:
        raise NotImplementedError


class TcpBulkApp(TcpApp):
    flow: TcpBulk

    def begin(self, _: object = None) -> None:
        client = self._open(self.flow.tcp, self.flow.port)
        if self.flow.size is None:
            client.send_forever(now=self.engine.now)
        else:
            client.send(self.flow.size, now=self.engine.now)
        self._connect()
        if self.flow.stop is not None:
            self.engine.schedule(self.stop_at, self._stop)

    def _client_event(self, what: str, conn: TcpConnection) -> None:
        if what == "established" and self.flow.size is not None:
            conn.close(self.engine.now)

    def _server_event(self, what: str, conn: TcpConnection) -> None:
        if what == "remote_closed":
            self.stats.completed = self.engine.now
            conn.close(self.engine.now)

    def _stop(self, _: object) -> None:
        self.client.close()

    def delivered_now(self) -> int:
        return self.server.conn.delivered if self.began else 0

    def finish(self, end: int) -> None:
        c, s = self.client.conn, self.server.conn
        self.stats.delivered = s.delivered
        self.stats.recv_bytes = s.delivered
        self.stats.rtts.extend(c.rtt_samples)
        self.stats.retransmits = c.retransmits
        self.stats.timeouts = c.timeouts
        self.stats.extra.update(cwnd_bytes=c.cwnd, state=c.state, fast_retransmits=c.fast_retransmits)
        if c.error:
            self.stats.extra["error"] = c.error


class TcpRequestResponseApp(TcpApp):
    flow: TcpRequestResponse

    def begin(self, _: object = None) -> None:
        self._open(self.flow.tcp, self.flow.port)
        self.asked = 0
        self.served = 0
        self.request_end = 0  # server side: delivered bytes at which the current request ends
        self.response_end = 0  # client side: delivered bytes at which the response ends
        self.asked_at = 0
        self._connect()

    def _ask(self, _: object = None) -> None:
        f = self.flow
        if self.engine.now >= self.stop_at or (f.requests is not None and self.asked >= f.requests):
            self.client.close()
            return
        self.asked += 1
        self.asked_at = self.engine.now
        self.request_end += f.request_size
        self.client.conn.send(f.request_size, now=self.engine.now)
        self.client.flush()

    def _client_event(self, what: str, conn: TcpConnection) -> None:
        if what == "established":
            self._ask()
        elif what == "data" and self.response_end and conn.delivered >= self.response_end:
            self.response_end = 0
            self.stats.responses.append(self.engine.now - self.asked_at)
            think = max(0, round(self.flow.think.sample(self.rng)))
            self.engine.schedule(self.engine.now + think, self._ask)

    def _server_event(self, what: str, conn: TcpConnection) -> None:
        if what == "data" and conn.delivered >= self.request_end > 0:
            size = max(1, round(self.flow.response_size.sample(self.rng)))
            self.served += 1
            # The client learns the response length from its header; we keep it on the side.
            self.response_end = self.client.conn.delivered + size
            conn.send(size, now=self.engine.now)
        elif what == "remote_closed":
            conn.close(self.engine.now)

    def delivered_now(self) -> int:
        return self.client.conn.delivered + self.server.conn.delivered if self.began else 0

    def finish(self, end: int) -> None:
        c, s = self.client.conn, self.server.conn
        self.stats.delivered = c.delivered + s.delivered
        self.stats.recv_bytes = c.delivered
        self.stats.rtts.extend(c.rtt_samples)
        self.stats.rtts.extend(s.rtt_samples)
        self.stats.retransmits = c.retransmits + s.retransmits
        self.stats.timeouts = c.timeouts + s.timeouts
        self.stats.extra.update(requests=self.asked, responses=len(self.stats.responses))


class UdpSender(App):
    """Shared by the UDP sources: a receiver that measures, and ``emit``."""

    def begin(self, _: object = None) -> None:
        self.sport = self.src.ephemeral_port()
        self.seq = 0
        self.stats.started = self.engine.now
        self.dst.udp[self.flow.port] = self._receive  # type: ignore[attr-defined]
        self.run()

    def run(self) -> None:
        raise NotImplementedError

    def emit(self, payload: int, ip_size: int) -> None:
        now = self.engine.now
        self.seq += 1
        d = UdpDatagram(self.sport, self.flow.port, payload, self.seq, now)  # type: ignore[attr-defined]
        self.src.output(Packet(self.saddr, self.daddr, PROTO_UDP, ip_size, d, self.stats))
        self.stats.sent_packets += 1
        self.stats.sent_bytes += payload

    def _receive(self, pkt: Packet) -> None:
        st = self.stats
        st.recv_packets += 1
        st.recv_bytes += pkt.payload.length
        st.delivered += pkt.payload.length
        st.delays.append(self.engine.now - pkt.payload.sent)


class UdpCbrApp(UdpSender):
    flow: UdpCbr | UdpOnOff

    def run(self) -> None:
        self.ip_size = self.flow.size + 28
        self.gap = self.flow.rate.tx_time(self.ip_size)
        self._tick()

    def _tick(self, _: object = None) -> None:
        now = self.engine.now
        if now >= self.stop_at or self._paused(now):
            return
        self.emit(self.flow.size, self.ip_size)
        self.engine.schedule(now + self.gap, self._tick)

    def _paused(self, now: int) -> bool:
        return False


class UdpOnOffApp(UdpCbrApp):
    """A CBR source that sends only during its on periods."""

    flow: UdpOnOff

    def run(self) -> None:
        self.on_until = self.engine.now + max(1, round(self.flow.on.sample(self.rng)))
        super().run()

    def _paused(self, now: int) -> bool:
        if now < self.on_until:
            return False
        off = max(1, round(self.flow.off.sample(self.rng)))
        self.engine.schedule(now + off, self._on)
        return True

    def _on(self, _: object = None) -> None:
        self.on_until = self.engine.now + max(1, round(self.flow.on.sample(self.rng)))
        self._tick()


class PoissonApp(UdpSender):
    flow: Poisson

    def run(self) -> None:
        self.mean_gap = 1e9 / self.flow.rate
        self._tick()

    def _tick(self, _: object = None) -> None:
        now = self.engine.now
        if now >= self.stop_at:
            return
        size = max(28, round(self.flow.size.sample(self.rng)))
        self.emit(size - 28, size)
        self.engine.schedule(now + max(1, round(self.rng.expovariate(1.0) * self.mean_gap)), self._tick)


class PingApp(App):
    flow: Ping

    def begin(self, _: object = None) -> None:
        self.ident = self.rng.getrandbits(16)
        self.src.icmp_handlers[self.ident] = self._receive
        self.seq = 0
        self.stats.started = self.engine.now
        self.stats.extra["icmp_errors"] = []
        self._tick()

    def _tick(self, _: object = None) -> None:
        now = self.engine.now
        f = self.flow
        if now >= self.stop_at or (f.count is not None and self.seq >= f.count):
            return
        self.seq += 1
        msg = IcmpMessage(ICMP_ECHO_REQUEST, 0, self.ident, self.seq, 8 + f.size, now)
        self.src.output(Packet(self.saddr, self.daddr, PROTO_ICMP, 20 + 8 + f.size, msg, self.stats, f.ttl))
        self.stats.sent_packets += 1
        self.engine.schedule(now + f.interval, self._tick)

    def _receive(self, pkt: Packet) -> None:
        msg: IcmpMessage = pkt.payload
        now = self.engine.now
        if msg.type == ICMP_ECHO_REPLY:
            self.stats.recv_packets += 1
            self.stats.rtts.append(now - msg.sent)
        else:
            orig = msg.original
            assert orig is not None
            self.stats.extra["icmp_errors"].append(
                {"type": msg.type, "code": msg.code, "from": str(IPv4Address(pkt.src)), "seq": orig.payload.seq,
                 "time_s": now / 1e9}
            )


APPS: dict[type[Flow], type[App]] = {
    TcpBulk: TcpBulkApp,
    TcpRequestResponse: TcpRequestResponseApp,
    UdpCbr: UdpCbrApp,
    UdpOnOff: UdpOnOffApp,
    Poisson: PoissonApp,
    Ping: PingApp,
}

__all__ = ["APPS", "App", "TcpAgent"]
