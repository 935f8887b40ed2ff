"""Interval bookkeeping for TCP: the sender's SACK scoreboard and the receiver's reassembly queue.

Both hold sorted, disjoint, non-adjacent byte ranges ``[start, end)`` in *unbounded* sequence
offsets (relative to the ISS, never wrapped), as parallel lists so :mod:`bisect` finds a range
in O(log n). They grow with the number of holes in the window, not with its size: an update
costs O(blocks touched), so the hot path stays cheap even with a large window.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from primogeni.sim.proto.tcp_segment import MAX_SACK_BLOCKS, SEQ_MASK, SackBlocks


class Scoreboard:
    """The sender's record of SACKed ranges above SND.UNA (RFC 6675 section 3)."""

    __slots__ = ("ends", "sacked", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.sacked = 0  # total SACKed bytes held

    def clear(self) -> None:
        self.starts.clear()
        self.ends.clear()
        self.sacked = 0

    def add(self, lo: int, hi: int) -> None:
        """Mark ``[lo, hi)`` SACKed, merging with ranges it overlaps or touches."""
        starts, ends = self.starts, self.ends
        i = bisect_left(ends, lo)  # first range that ends at or after lo
        j = bisect_right(starts, hi)  # ranges before j start at or before hi
        if i == j:
            starts.insert(i, lo)
            ends.insert(i, hi)
            self.sacked += hi - lo
            return
        if starts[i] <= lo and ends[i] >= hi:  # already known: the common repeat
            return
        new_lo = min(lo, starts[i])
        new_hi = max(hi, ends[j - 1])
        old = 0
        for k in range(i, j):
            old += ends[k] - starts[k]
        starts[i:j] = (new_lo,)
        ends[i:j] = (new_hi,)
        self.sacked += new_hi - new_lo - old

    def trim(self, una: int) -> None:
        """Forget everything below the cumulative ACK ``una``."""
        starts, ends = self.starts, self.ends
        k = bisect_right(ends, una)
        if k:
            for m in range(k):
                self.sacked -= ends[m] - starts[m]
            del starts[:k], ends[:k]
        if starts and starts[0] < una:
            self.sacked -= una - starts[0]
            starts[0] = una

    def sacked_below(self, x: int) -> int:
        """SACKed bytes below offset ``x``."""
        total = 0
        starts, ends = self.starts, self.ends
        for k in range(len(starts)):
            s = starts[k]
            if s >= x:
                break
            e = ends[k]
            total += (e if e < x else x) - s
        return total

    def lost_edge(self, una: int, threshold: int) -> int:
        """End of the prefix RFC 6675 IsLost() marks lost: the highest start with more than
        ``threshold`` SACKed bytes at or above it; ``una`` when nothing is lost."""
        acc = 0
        starts, ends = self.starts, self.ends
        for k in range(len(starts) - 1, -1, -1):
            acc += ends[k] - starts[k]
            if acc > threshold:
                return starts[k]
        return una

    def next_hole(self, s: int) -> tuple[int, int] | None:
        """The first un-SACKed range at or after ``s`` that has SACKed data above it."""
        starts = self.starts
        i = bisect_right(starts, s) - 1
        if i >= 0 and self.ends[i] > s:
            s = self.ends[i]
        i += 1
        if i < len(starts):
            return s, starts[i]
        return None


class OutOfOrderQueue:
    """The receiver's out-of-order segments, merged into blocks, with SACK recency.

    ``datas`` holds each block's bytes, or ``None`` when the sender carries no payload.
    ``recent`` lists the starts of up to :data:`MAX_SACK_BLOCKS` blocks, the one that took the
    latest arrival first, for RFC 2018's rule on the order of SACK blocks.
    """

    __slots__ = ("_sacks", "bytes", "datas", "ends", "recent", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.datas: list[bytes | None] = []
        self.recent: list[int] = []
        self.bytes = 0  # payload bytes held
        self._sacks: SackBlocks | None = None  # cached wire blocks, None when stale

    def __bool__(self) -> bool:
        return bool(self.starts)

    def clear(self) -> None:
        self.starts.clear()
        self.ends.clear()
        self.datas.clear()
        self.recent.clear()
        self.bytes = 0
        self._sacks = None

    def add(self, lo: int, hi: int, data: bytes | None) -> None:
        """Hold ``[lo, hi)`` (with its bytes, if carried), merging with neighbours."""
        starts, ends = self.starts, self.ends
        self._sacks = None
        i = bisect_left(ends, lo)
        j = bisect_right(starts, hi)
        if i == j:
            starts.insert(i, lo)
            ends.insert(i, hi)
            self.datas.insert(i, data)
            self.bytes += hi - lo
            self._touch(lo, lo, hi)
            return
        new_lo = min(lo, starts[i])
        new_hi = max(hi, ends[j - 1])
        old = 0
        merged: bytes | None = None
        carried = data is not None and all(d is not None for d in self.datas[i:j])
        buf = bytearray(new_hi - new_lo) if carried else None
        for k in range(i, j):
            old += ends[k] - starts[k]
            d = self.datas[k]
            if buf is not None and d is not None:
                buf[starts[k] - new_lo : ends[k] - new_lo] = d
        if buf is not None and data is not None:
            buf[lo - new_lo : hi - new_lo] = data
            merged = bytes(buf)
        starts[i:j] = (new_lo,)
        ends[i:j] = (new_hi,)
        self.datas[i:j] = (merged,)
        self.bytes += new_hi - new_lo - old
        self._touch(new_lo, new_lo, new_hi)

    def _touch(self, start: int, lo: int, hi: int) -> None:
        """Put the block at ``start`` (spanning ``[lo, hi]``) first among the recent ones."""
        recent = [r for r in self.recent if not lo <= r <= hi]
        recent.insert(0, start)
        del recent[MAX_SACK_BLOCKS:]
        self.recent = recent

    def pop_ready(self, rcv_nxt: int) -> tuple[int, bytes | None] | None:
        """Remove the first block if it starts at or below ``rcv_nxt``.

        Returns ``(end, new_bytes)``, where ``new_bytes`` is the block's payload beyond
        ``rcv_nxt`` (None in synthetic mode); None when the first block is still above a hole.
        """
        starts = self.starts
        if not starts or starts[0] > rcv_nxt:
            return None
        lo = starts.pop(0)
        hi = self.ends.pop(0)
        data = self.datas.pop(0)
        self.bytes -= hi - lo
        self._sacks = None
        if lo in self.recent:
            self.recent.remove(lo)
        if data is not None and lo < rcv_nxt:
            data = data[rcv_nxt - lo :]
        return hi, data

    def sack_blocks(self, irs: int) -> SackBlocks:
        """Up to :data:`MAX_SACK_BLOCKS` wire ``(left, right)`` edges, most recent first,
        then the highest blocks not yet listed."""
        cached = self._sacks
        if cached is not None:
            return cached
        starts, ends = self.starts, self.ends
        idx = [bisect_left(starts, r) for r in self.recent]
        k = len(starts) - 1
        while len(idx) < MAX_SACK_BLOCKS and k >= 0:
            if k not in idx:
                idx.append(k)
            k -= 1
        blocks = tuple(((irs + starts[k]) & SEQ_MASK, (irs + ends[k]) & SEQ_MASK) for k in idx)
        self._sacks = blocks
        return blocks
