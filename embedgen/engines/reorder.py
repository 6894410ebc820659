"""Putting windows back in input order when workers finish them out of order.

Every row a Ray worker returns carries its order key: the read unit (``_unit``), the
window within the unit (``_win``) and the row's position in the window (``_pos``). Each
window also sends one marker row (``_pos == -1``) saying how many chunk rows it has
(``_n``) and whether it is its unit's last window (``_last``). :class:`Reorder` collects
the pieces, hands out complete windows strictly in (unit, window) order, and spills
windows that arrive early to Arrow IPC files once more than ``max_bytes`` wait in memory,
so the writer streams in order with bounded memory however the workers are scheduled.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedgen.errors import EmbedgenError

ORDER_COLUMNS = ("_unit", "_win", "_pos", "_n", "_last")
MAX_HELD_BYTES = 256 * 1024 * 1024


@dataclass
class _Pending:
    pieces: list[Any] = field(default_factory=list)
    rows: int = 0
    """Chunk rows received (markers excluded)."""
    expected: int | None = None
    last: bool = False
    nbytes: int = 0
    spilled: Path | None = None

    @property
    def complete(self) -> bool:
        return self.expected is not None and self.rows == self.expected


class Reorder:
    """Complete windows of ``units`` read units, in order; early ones held or spilled."""

    def __init__(self, units: int, spill_dir: Path, *, max_bytes: int = MAX_HELD_BYTES) -> None:
        self.units = units
        self.spill_dir = spill_dir
        self.max_bytes = max_bytes
        self._pending: dict[tuple[int, int], _Pending] = {}
        self._next = (0, 0)
        self._held_bytes = 0
        self._spills = 0
        self.peak_bytes = 0
        """Most bytes held in memory at once (reported by the bench)."""

    @property
    def done(self) -> bool:
        return self._next[0] >= self.units

    def add(self, table: Any) -> Iterator[Any]:
        """Take rows of one or more windows; yield every window now due, each one table
        sorted by ``_pos`` with the marker row first."""
        import pyarrow.compute as pc

        if table.num_rows == 0:
            return
        units = table.column("_unit").to_numpy()
        wins = table.column("_win").to_numpy()
        if (units == units[0]).all() and (wins == wins[0]).all():
            groups = [((int(units[0]), int(wins[0])), table)]
        else:
            keys = sorted({(int(u), int(w)) for u, w in zip(units, wins)})
            groups = []
            for u, w in keys:
                mask = pc.and_(
                    pc.equal(table.column("_unit"), u), pc.equal(table.column("_win"), w)
                )
                groups.append(((u, w), table.filter(mask)))
        for key, piece in groups:
            self._add_piece(key, piece)
        yield from self._due()

    def _add_piece(self, key: tuple[int, int], piece: Any) -> None:
        if key < self._next:
            raise EmbedgenError(
                f"internal error: rows of window {key} arrived after it was written"
            )
        p = self._pending.setdefault(key, _Pending())
        pos = piece.column("_pos").to_numpy()
        markers = (pos < 0).nonzero()[0]
        for i in markers:
            p.expected = int(piece.column("_n")[int(i)].as_py())
            p.last = bool(piece.column("_last")[int(i)].as_py())
        p.rows += len(pos) - len(markers)
        p.pieces.append(piece)
        p.nbytes += piece.nbytes
        self._held_bytes += piece.nbytes
        self.peak_bytes = max(self.peak_bytes, self._held_bytes)
        if p.expected is not None and p.rows > p.expected:
            raise EmbedgenError(f"internal error: window {key} has more rows than announced")
        if self._held_bytes > self.max_bytes:
            self._spill()

    def _due(self) -> Iterator[Any]:
        while not self.done:
            p = self._pending.get(self._next)
            if p is None or not p.complete:
                return
            del self._pending[self._next]
            table = self._take(p)
            u, w = self._next
            self._next = (u + 1, 0) if p.last else (u, w + 1)
            yield table

    def _take(self, p: _Pending) -> Any:
        import pyarrow as pa

        if p.spilled is not None:
            with pa.memory_map(str(p.spilled)) as src:
                table = pa.ipc.open_file(src).read_all()
            p.spilled.unlink()
        else:
            self._held_bytes -= p.nbytes
            table = pa.concat_tables(p.pieces) if len(p.pieces) > 1 else p.pieces[0]
        return table.sort_by("_pos")

    def _spill(self) -> None:
        """Move complete early windows, largest first, to disk until under the bound."""
        import pyarrow as pa

        ready = sorted(
            (p for p in self._pending.values() if p.complete and p.spilled is None),
            key=lambda p: -p.nbytes,
        )
        for p in ready:
            if self._held_bytes <= self.max_bytes // 2:
                break
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            path = self.spill_dir / f"window-{self._spills:08d}.arrow"
            self._spills += 1
            table = pa.concat_tables(p.pieces) if len(p.pieces) > 1 else p.pieces[0]
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
                w.write_table(table)
            p.spilled, p.pieces = path, []
            self._held_bytes -= p.nbytes

    def check_finished(self) -> None:
        """Every unit's windows were handed out (else rows were lost on the way)."""
        if not self.done or self._pending:
            raise EmbedgenError(
                f"internal error: the Ray run ended with windows missing (next {self._next}, "
                f"{len(self._pending)} waiting)"
            )
