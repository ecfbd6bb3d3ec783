"""DRAM stalls of one layer under a limited interface bandwidth, as SCALE-Sim v3 counts them.

SCALE-Sim 3.0.0 with ``InterfaceBandwidth: USER`` (``scalesim/memory/``) runs every cycle's SRAM
requests of the array through double-buffered read buffers (ifmap, filter) and a write buffer
(ofmap). This module is this project's own re-statement of that algorithm, request for request,
with numpy doing the per-address work; it reproduces SCALE-Sim's stall and total cycles.

What decides the figures:

* Demand: the array's SRAM requests per cycle (one row per cycle, -1 for none), built from the
  im2col operand matrices fold by fold as SCALE-Sim's ``systolic_compute_{os,ws,is}.py`` do
  (gap rows between folds, skewed or flipped folds).
* Read buffers: the operand's prefetch order is cut into ``ceil(words/100)``-word sets; the
  active half of the SRAM holds a window of sets, the prefetch half the next ones. A request
  for an address outside the window slides the window by the prefetch half; each slide is a
  DRAM transfer of ``ceil(half / bandwidth)`` cycles plus one, chained back to back from the
  first one, whatever the array is doing. Stalls follow SCALE-Sim's bookkeeping, including
  its doubling of a positive wait and its credit for a transfer that finished early.
* Write buffer: ofmap words fill the SRAM; once past its active half, a drain of the other
  half's lines starts, one line (``bandwidth`` words) per cycle; a full SRAM waits for the
  drain to end.
* Per cycle the array stalls by the largest of the three; the total is the last ofmap write.

A bandwidth that is not a whole number of words per cycle has no SCALE-Sim counterpart: lines
are then one word wide and a transfer of n words takes ``ceil(n / bandwidth)`` cycles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from devices.npu_sim.config import Dataflow

Matrix = npt.NDArray[np.int32]  # addresses, -1 for no request
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class StallResult:
    """One layer (one repeat) on the memory system: cycles and DRAM words moved."""

    stall_cycles: int
    total_cycles: int
    ifmap_dram_reads: int
    filter_dram_reads: int
    ofmap_dram_writes: int


def simulate_memory(
    *,
    ifmap_hw: tuple[int, int],
    filter_hw: tuple[int, int],
    channels: int,
    num_filters: int,
    stride: tuple[int, int],
    ofmap_hw: tuple[int, int],
    rows: int,
    cols: int,
    dataflow: Dataflow,
    sram_words: tuple[int, int, int],
    bandwidth: tuple[float, float, float],
) -> StallResult:
    """Stalls and total cycles of one dense layer; ``sram_words`` and ``bandwidth`` (words per
    cycle) are for the ifmap, filter and ofmap memories, in that order."""
    ifmap, filt, ofmap = _operand_matrices(
        ifmap_hw, filter_hw, channels, num_filters, stride, ofmap_hw
    )
    prefetch_i, prefetch_f, demand_i, demand_f, demand_o = _request_matrices(
        ifmap, filt, ofmap, rows, cols, dataflow
    )
    lines = demand_o.shape[0]
    reads_i = _ReadBuffer(prefetch_i, demand_i, sram_words[0], bandwidth[0])
    reads_f = _ReadBuffer(prefetch_f, demand_f, sram_words[1], bandwidth[1])
    counts = np.count_nonzero(demand_o != -1, axis=1)
    writes = _WriteBuffer(sram_words[2], bandwidth[2], counts)
    ofmap_counts = counts.tolist()
    stalls = 0
    total = 0
    i = 0
    events = sorted(set(reads_i.events) | set(reads_f.events))
    next_event = 0
    while i < lines:
        cycle = i + stalls
        stall_i = reads_i.serve(i, cycle)
        stall_f = reads_f.serve(i, cycle)
        stall_o = writes.serve(ofmap_counts[i], cycle)
        total = max(total, cycle + stall_o)
        stalls += int(max(stall_i, stall_f, stall_o))
        i += 1
        # Lines with no read misses and no write event pass without a stall.
        while next_event < len(events) and events[next_event] < i:
            next_event += 1
        limit = events[next_event] if next_event < len(events) else lines
        if limit > i:
            skipped = writes.quiet_rows(i, limit, i + stalls)
            if skipped:
                i += skipped
                total = max(total, i - 1 + stalls)
    writes.drain_all()
    return StallResult(
        stall_cycles=stalls,
        total_cycles=total,
        ifmap_dram_reads=reads_i.dram_words,
        filter_dram_reads=reads_f.dram_words,
        ofmap_dram_writes=writes.drained,
    )


# Operand and request matrices (SCALE-Sim's compute/operand_matrix.py and systolic_compute_*)


def _operand_matrices(
    ifmap_hw: tuple[int, int],
    filter_hw: tuple[int, int],
    channels: int,
    num_filters: int,
    stride: tuple[int, int],
    ofmap_hw: tuple[int, int],
) -> tuple[Matrix, Matrix, Matrix]:
    """im2col addresses: ifmap E x W (-1 where a window leaves the ifmap), filter W x K,
    ofmap E x K. Each operand has its own address space."""
    ih, iw = ifmap_hw
    fh, fw = filter_hw
    oh, ow = ofmap_hw
    window = fh * fw * channels
    orow, ocol = np.divmod(np.arange(oh * ow), ow)
    top, left = orow * stride[0], ocol * stride[1]
    frow, rest = np.divmod(np.arange(window), fw * channels)
    fcol, ch = np.divmod(rest, channels)
    y = top[:, None] + frow[None, :]
    x = left[:, None] + fcol[None, :]
    ifmap = ((y * iw + x) * channels + ch[None, :]).astype(np.int32)
    ifmap[(y >= ih) | (x >= iw)] = -1
    filt = (np.arange(num_filters)[None, :] * window + np.arange(window)[:, None]).astype(np.int32)
    ofmap = np.arange(oh * ow * num_filters, dtype=np.int32).reshape(oh * ow, num_filters)
    return ifmap, filt, ofmap


def _pad(m: Matrix, rows: int, cols: int) -> Matrix:
    out = np.full((rows, cols), -1, dtype=m.dtype)
    out[: m.shape[0], : m.shape[1]] = m
    return out


def _gap(folds: int, rows: int, cols: int) -> Matrix:
    return np.full((folds, rows, cols), -1, dtype=np.int32)


def _skew(m: Matrix) -> Matrix:
    """Each fold's column j delayed by j rows (the wavefront entering a systolic array):
    (folds, r, c) -> (folds * (r + c - 1), c)."""
    folds, r, c = m.shape
    padded = np.full((folds, r + 2 * (c - 1), c), -1, dtype=m.dtype)
    padded[:, c - 1 : c - 1 + r] = m
    s0, s1, s2 = padded.strides
    # out[f, i, j] = padded[f, c - 1 + i - j, j]
    view = np.lib.stride_tricks.as_strided(
        padded[:, c - 1 :], shape=(folds, r + c - 1, c), strides=(s0, s1, s2 - s1)
    )
    return view.reshape(folds * (r + c - 1), c)


def _diagonals(m: Matrix) -> Matrix:
    """Elements by anti-diagonal (row + col), bottom row first within one: the order in which
    SCALE-Sim prefetches a skewed operand."""
    rows, cols = m.shape
    d = np.arange(rows + cols - 1)
    top = np.minimum(d, rows - 1)  # each diagonal starts at its lowest row
    length = top - np.maximum(0, d - cols + 1) + 1
    begin = np.concatenate(([0], np.cumsum(length)[:-1]))
    r, c = np.indices(m.shape)
    out = np.empty(m.size, dtype=m.dtype)
    out[(begin[r + c] + top[r + c] - r).ravel()] = m.ravel()
    return out


def _folds(m: Matrix, rows: int, cols: int) -> Matrix:
    """``m`` padded with -1 to whole ``rows`` x ``cols`` blocks: (row block, col block, rows,
    cols)."""
    rf, cf = -(-m.shape[0] // rows), -(-m.shape[1] // cols)
    padded = _pad(m, rf * rows, cf * cols)
    return padded.reshape(rf, rows, cf, cols).transpose(0, 2, 1, 3)


def _request_matrices(
    ifmap: Matrix,
    filt: Matrix,
    ofmap: Matrix,
    rows: int,
    cols: int,
    dataflow: Dataflow,
) -> tuple[Matrix, Matrix, Matrix, Matrix, Matrix]:
    """Prefetch orders (flat) of ifmap and filter, and the demand matrices (one row per cycle)
    of ifmap, filter and ofmap, as SCALE-Sim builds them for ``dataflow``: folds in order
    column fold by column fold, row folds within."""
    e, w = ifmap.shape
    k = filt.shape[1]
    cat = np.concatenate
    if dataflow == "ws":  # S_r = W, S_c = K, T = E
        t = e
        i_folds = _folds(ifmap, e, rows)[0]  # (row folds, T, rows)
        rf = len(i_folds)
        f_blocks = _folds(filt, rows, cols)  # (row fold, col fold, rows, cols)
        cf = f_blocks.shape[1]
        o_folds = _folds(ofmap, e, cols)[0]  # (col folds, T, cols)
        pre_i = _diagonals(i_folds.reshape(-1, rows))
        pre_f = _folds(filt, w, cols)[0].ravel()
        d_i = _skew(cat((_gap(rf, rows, rows), i_folds, _gap(rf, cols - 1, rows)), axis=1))
        d_i = np.tile(d_i, (cf, 1))
        blocks = f_blocks.transpose(1, 0, 2, 3).reshape(cf * rf, rows, cols)[:, ::-1]
        d_f = cat((blocks, _gap(cf * rf, rows + cols + t - 2, cols)), axis=1).reshape(-1, cols)
        d_o = _skew(cat((_gap(cf, 2 * rows - 1, cols), o_folds), axis=1))
        d_o = np.repeat(d_o.reshape(cf, -1, cols), rf, axis=0).reshape(-1, cols)
    elif dataflow == "os":  # S_r = E, S_c = K, T = W
        t = w
        i_folds = _folds(np.ascontiguousarray(ifmap.T), w, rows)[0]  # (row folds, T, rows)
        f_folds = _folds(filt, w, cols)[0]  # (col folds, T, cols)
        rf, cf = len(i_folds), len(f_folds)
        pre_i = _diagonals(i_folds.reshape(-1, rows))
        pre_f = _diagonals(f_folds.reshape(-1, cols))
        d_i = np.tile(_skew(cat((i_folds, _gap(rf, cols - 1, rows)), axis=1)), (cf, 1))
        d_f = _skew(cat((f_folds, _gap(cf, rows - 1, cols)), axis=1))
        d_f = np.repeat(d_f.reshape(cf, -1, cols), rf, axis=0).reshape(-1, cols)
        blocks = _folds(ofmap, rows, cols).transpose(1, 0, 2, 3).reshape(cf * rf, rows, cols)
        d_o = _skew(cat((_gap(cf * rf, t - 1, cols), blocks[:, ::-1]), axis=1))
    else:  # is: S_r = W, S_c = E, T = K
        t = k
        trans = np.ascontiguousarray(ifmap.T)  # W x E
        i_blocks = _folds(trans, rows, cols)  # (row fold, col fold, rows, cols)
        rf, cf = i_blocks.shape[:2]
        f_folds = _folds(filt, rows, k).reshape(rf, rows, k).transpose(0, 2, 1)  # (rf, K, rows)
        pre_i = _folds(trans, w, cols)[0].ravel()
        pre_f = _diagonals(f_folds.reshape(-1, rows))
        blocks = i_blocks.transpose(1, 0, 2, 3).reshape(cf * rf, rows, cols)[:, ::-1]
        d_i = cat((blocks, _gap(cf * rf, rows + cols + t - 2, cols)), axis=1).reshape(-1, cols)
        d_f = _skew(cat((_gap(rf, rows, rows), f_folds, _gap(rf, cols - 1, rows)), axis=1))
        d_f = np.tile(d_f, (cf, 1))
        o_folds = _folds(np.ascontiguousarray(ofmap.T), k, cols)[0]  # (col folds, K, cols)
        d_o = _skew(cat((_gap(cf, 2 * rows - 1, cols), o_folds), axis=1))
        d_o = np.repeat(d_o.reshape(cf, -1, cols), rf, axis=0).reshape(-1, cols)
    return pre_i, pre_f, d_i, d_f, d_o


# The buffers (SCALE-Sim's memory/read_buffer.py and memory/write_buffer.py)


class _ReadBuffer:
    """Which cycles (demand rows) miss the active window, and the stalls they cost."""

    def __init__(self, prefetch: Matrix, demand: Matrix, words: int, bw: float) -> None:
        valid = prefetch[prefetch != -1]
        per_set = math.ceil(words / 100)
        self.per_set = per_set
        sets = len(valid) // per_set + 1
        active = math.ceil(words * 0.5)
        ahead = words - active
        self.active_sets = min(sets, math.ceil(active / per_set))
        self.step = min(sets - self.active_sets, math.ceil(ahead / per_set))
        self.sets = sets
        self.transfer = _cycles(ahead, bw) + 1  # one slide of the window
        self.last_done = -1.0  # the first fill completes just before cycle 0
        # SCALE-Sim's count of DRAM words requested: lines of bw words.
        line = bw if float(bw).is_integer() else 1.0
        first_lines = min(math.ceil(active / line), math.ceil(len(prefetch) / line))
        self._first_words = int(first_lines * line)
        self._slide_words = int(math.ceil(ahead / line) * line)
        self.slides: dict[int, int] = {}
        if self.active_sets < sets:
            self._find_misses(valid, demand)
        self.events = self.slides.keys()

    @property
    def dram_words(self) -> int:
        return self._first_words + self._slide_words * sum(self.slides.values())

    def _find_misses(self, valid: Matrix, demand: Matrix) -> None:
        n = self.sets
        # sets[a] lists the sets that hold address a (padded with 2n, which no window holds).
        set_of = np.arange(len(valid), dtype=np.int64) // self.per_set
        order = np.argsort(valid, kind="stable")
        by_address = valid[order]
        first = np.flatnonzero(np.diff(by_address, prepend=-1))  # each address's first entry
        starts = np.repeat(first, np.diff(first, append=len(by_address)))
        column = np.arange(len(valid)) - starts
        sets = np.full((int(valid.max()) + 1, int(column.max()) + 1), 2 * n, dtype=np.int64)
        sets[by_address, column] = set_of[order]
        flat = demand.ravel()
        pos = np.flatnonzero(flat != -1)
        ids = flat[pos]
        row_of = pos // demand.shape[1]
        width = self.active_sets
        step = self.step

        def hits(chunk: Matrix, start: int) -> npt.NDArray[np.bool_]:
            held = sets[chunk]
            inside = (held >= start) & (held < start + width)
            if start + width > n:
                inside |= held < start + width - n
            return np.asarray(inside.any(axis=1))

        slides = 0
        start = 0
        p = previous = 0
        size = 1024
        total = len(ids)
        while p < total:
            chunk_hits = hits(ids[p : p + size], start)
            if chunk_hits.all():
                p += size
                size *= 2
                continue
            p += int(np.argmin(chunk_hits))
            one = ids[p : p + 1]
            count = 0
            while True:
                slides += 1
                count += 1
                start = (slides * step) % n
                if hits(one, start)[0]:
                    break
                if count > n + 1:
                    raise AssertionError("an address is missing from its prefetch order")
            row = int(row_of[p])
            self.slides[row] = self.slides.get(row, 0) + count
            # The next miss is likely about as far on as this one was.
            size = max(1024, p - previous)
            previous = p
            p += 1

    def serve(self, row: int, cycle: int) -> float:
        """Stall of demand row ``row`` issued at ``cycle``."""
        count = self.slides.get(row)
        if not count:
            return 0.0
        offset = 1.0
        for _ in range(count):
            self.last_done += self.transfer
            wait = self.last_done - (cycle + offset)
            # SCALE-Sim adds the wait, and a positive one twice.
            offset += wait + max(wait, 0.0)
        return offset - 1.0


class _WriteBuffer:
    """The ofmap SRAM: fills, drains in lines of ``bw`` words, and waits when full."""

    def __init__(self, words: int, bw: float, counts: IntArray) -> None:
        self.prefix = np.concatenate(([0], np.cumsum(counts)))
        self.busy_rows = np.flatnonzero(counts)
        self.active = math.ceil(words * 0.5)
        drain = words - self.active
        self.whole = float(bw).is_integer()
        self.line = int(bw) if self.whole else 1
        self.bw = bw
        self.lines_per_drain = math.ceil(drain / self.line)
        self.free = words
        self.drain_end = 0
        self.fill = 0  # words in the open line
        self.lines: list[list[int]] = []  # [count, words in the last one] runs, undrained
        self.drained = 0

    def _store(self, n: int) -> None:
        self.free -= n
        full, self.fill = divmod(self.fill + n, self.line)
        if full:
            if self.lines and self.lines[-1][1] == self.line:
                self.lines[-1][0] += full
            else:
                self.lines.append([full, self.line])

    def _drain(self, cycle: int) -> int:
        if self.fill:
            self.lines.append([1, self.fill])
            self.fill = 0
        want = self.lines_per_drain
        taken = 0
        last = self.line
        while want and self.lines:
            run = self.lines[0]
            n = min(want, run[0])
            taken += n
            want -= n
            last = run[1] if n == run[0] else self.line
            run[0] -= n
            if not run[0]:
                self.lines.pop(0)
        words = taken * self.line - (self.line - last)
        self.free += words
        self.drained += words
        duration = taken if self.whole else math.ceil(taken / self.bw)
        return cycle + duration - 1

    def serve(self, count: int, cycle: int) -> int:
        """Store ``count`` ofmap words at ``cycle``; returns the wait."""
        offset = 0
        now = cycle
        while count:
            if now < self.drain_end:
                until_full = max(self.free, 1)
                if count < until_full:
                    self._store(count)
                    break
                self._store(until_full)
                count -= until_full
                offset += self.drain_end - now
                now = self.drain_end
            else:
                until_drain = max(self.free - self.active + 1, 1)
                if count < until_drain:
                    self._store(count)
                    break
                self._store(until_drain)
                count -= until_drain
                self.drain_end = self._drain(now)
        return offset

    def drain_all(self) -> None:
        """The final flush after the last row (it counts as DRAM writes, not as cycles)."""
        self._drain(0)
        while self.lines:
            self._drain(0)

    def quiet_rows(self, start: int, limit: int, cycle: int) -> int:
        """Store the rows from ``start`` (row ``start`` issued at ``cycle``, no stalls between)
        up to ``limit`` or to the first that waits or starts a drain, which is left unstored;
        returns how many were stored."""
        prefix = self.prefix
        base = int(prefix[start])
        # Rows before the drain ends wait once the SRAM is full.
        drain_row = min(start + max(self.drain_end - cycle, 0), limit)
        stop = int(np.searchsorted(prefix, base + self.free, side="left")) - 1
        if stop >= drain_row:
            # Later rows start a drain once past the active half.
            threshold = base + self.free - self.active
            if prefix[drain_row] > threshold:
                i = int(np.searchsorted(self.busy_rows, drain_row))
                stop = int(self.busy_rows[i]) if i < len(self.busy_rows) else limit
            else:
                stop = int(np.searchsorted(prefix, threshold, side="right")) - 1
            stop = max(stop, drain_row)
        stop = min(max(stop, start), limit)
        if stop > start:
            self._store(int(prefix[stop]) - base)
        return stop - start


def _cycles(words: int, bw: float) -> int:
    return math.ceil(words / bw)
