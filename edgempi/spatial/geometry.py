"""Region arithmetic of fused tile partitioning (DeepThings; Rama et al. 2024), in plain integers.

A group of layers is cut into tiles at its *output*; each tile walks back through the layers
to the input region it needs (conv: [o1·s − p, o2·s − p + k − 1], pooling likewise), clipped to
the feature map, with zero (or −∞) padding only where the walk leaves a true map border.
Splitting at the group's output puts every input boundary on a multiple of the product of the
group's strides, so no window is split by a tile edge.

Besides what a tile *needs*, every position of every intermediate map gets exactly one *owner*
(``own``): the owner's copy is the one that enters normalisation statistics. The needed ranges
are widened where necessary so each owner really computes what it owns (positions skipped by
a stride or lost at the end of a map are otherwise computed by nobody).

All ranges are inclusive ``(lo, hi)`` pairs; rows and columns are planned independently and a
rank at grid position (i, j) combines row tile i with column tile j (rank = i·C + j).
"""
from __future__ import annotations

from dataclasses import dataclass

Range = tuple[int, int]
Box = tuple[Range, Range]


@dataclass(frozen=True)
class Window:
    """How one layer maps positions along one axis; the default is a pointwise layer."""

    k: int = 1
    s: int = 1
    p: int = 0
    d: int = 1

    @property
    def span(self) -> int:
        return self.d * (self.k - 1) + 1

    def out_size(self, n: int) -> int:
        return (n + 2 * self.p - self.span) // self.s + 1

    def back(self, lo: int, hi: int) -> Range:
        """The (unclipped) input range that output positions lo..hi read."""
        return lo * self.s - self.p, hi * self.s - self.p + self.span - 1


def split(n: int, parts: int) -> list[Range]:
    """Cut 0..n−1 into ``parts`` contiguous ranges whose sizes differ by at most one."""
    return [(i * n // parts, (i + 1) * n // parts - 1) for i in range(parts)]


def width(r: Range) -> int:
    return r[1] - r[0] + 1


def intersect(a: Box, b: Box) -> Box | None:
    rows = (max(a[0][0], b[0][0]), min(a[0][1], b[0][1]))
    cols = (max(a[1][0], b[1][0]), min(a[1][1], b[1][1]))
    return (rows, cols) if rows[0] <= rows[1] and cols[0] <= cols[1] else None


def sizes_through(windows: list[Window], n: int) -> list[int]:
    """Map sizes at every layer boundary: input, then each layer's output."""
    out = [n]
    for w in windows:
        out.append(w.out_size(out[-1]))
    return out


@dataclass(frozen=True)
class AxisPlan:
    """One axis of one layer group. Index t is the tile, j the layer boundary (0 = group input,
    j + 1 = output of the group's layer j).

    ``take[t][j]`` is the part of ``need[t][j]`` (offsets from its start) that layer j reads,
    ``pads[t][j]`` the padding (before, after) layer j adds at true map borders.
    """

    sizes: tuple[int, ...]
    need: tuple[tuple[Range, ...], ...]
    own: tuple[tuple[Range, ...], ...]
    take: tuple[tuple[Range, ...], ...]
    pads: tuple[tuple[Range, ...], ...]

    @property
    def tiles(self) -> list[Range]:
        return [need[-1] for need in self.need]


def plan_axis(windows: list[Window], n_in: int, parts: int, *, axis: str = "row",
              first_layer: int = 0) -> AxisPlan:
    """Walk ``parts`` output tiles of a layer group back to its input.

    Refuses (``ValueError`` naming ``parallel.grid``) a split whose tiles at some boundary are
    empty or narrower than their halo: each tile would then redo more than its own work and
    read from devices beyond its neighbours.
    """
    sizes = sizes_through(windows, n_in)
    if min(sizes) < 1:
        raise ValueError(f"parallel.layers: a {sizes[0]}-px {axis} axis shrinks to nothing "
                         f"in layers {first_layer}..{first_layer + len(windows) - 1}")
    depth = len(windows)
    need: list[list[Range]] = [[(0, 0)] * (depth + 1) for _ in range(parts)]
    own = [row[:] for row in need]
    take = [[(0, 0)] * depth for _ in range(parts)]
    pads = [row[:] for row in take]
    for t, tile in enumerate(split(sizes[depth], parts)):
        need[t][depth] = own[t][depth] = tile
    for j in reversed(range(depth + 1)):
        if j < depth:
            n = sizes[j]
            raw = [windows[j].back(*need[t][j + 1]) for t in range(parts)]
            clipped = [(max(lo, 0), min(hi, n - 1)) for lo, hi in raw]
            for t, (lo, hi) in enumerate(clipped):
                own_hi = clipped[t + 1][0] - 1 if t + 1 < parts else n - 1
                own[t][j] = (lo, own_hi)
                need[t][j] = (lo, max(hi, own_hi))
                take[t][j] = (0, hi - lo)
                pads[t][j] = (max(0, -raw[t][0]), max(0, raw[t][1] - (n - 1)))
        _check_tiles([o[j] for o in own], [n[j] for n in need], axis, first_layer + j, j == depth)
    return AxisPlan(tuple(sizes), *(tuple(tuple(row) for row in m) for m in (need, own, take, pads)))


def _check_tiles(own: list[Range], need: list[Range], axis: str, layer: int, at_output: bool) -> None:
    """Every tile non-empty, and every halo within the next tile (neighbours only)."""
    where = f"at the output of layer {layer - 1}" if at_output else f"at the input of layer {layer}"
    if min(width(o) for o in own) < 1:
        raise ValueError(f"parallel.grid: {axis} tiles {where} would be empty; "
                         f"use fewer {axis}s in the grid or a larger input")
    for t in range(len(own) - 1):
        halo = need[t][1] - own[t][1]
        if width(own[t + 1]) < halo:
            raise ValueError(f"parallel.grid: {axis} tiles {where} would be {width(own[t + 1])} px, "
                             f"smaller than their halo of {halo} px; use fewer {axis}s in the grid, "
                             f"shorter parallel.groups or a larger input")


@dataclass(frozen=True)
class GroupPlan:
    """Both axes of one layer group on an R×C grid."""

    first: int
    last: int
    rows: AxisPlan
    cols: AxisPlan

    def index(self, rank: int) -> tuple[int, int]:
        """(row tile, column tile) of a rank."""
        return divmod(rank, len(self.cols.need))

    def box(self, kind: str, rank: int, j: int) -> Box:
        """``need`` or ``own`` box of a rank at boundary j."""
        i, c = self.index(rank)
        return getattr(self.rows, kind)[i][j], getattr(self.cols, kind)[c][j]

    def boxes(self, kind: str, j: int) -> list[Box]:
        return [self.box(kind, r, j) for r in range(len(self.rows.need) * len(self.cols.need))]


def check_groups(groups: list[tuple[int, int]] | list[list[int]], layers: int) -> list[tuple[int, int]]:
    """Groups must be [first, last] layer ranges that cover 0..layers−1 in order."""
    out = [tuple(int(v) for v in g) for g in groups]
    expected = 0
    for g in out:
        if len(g) != 2 or g[0] != expected or g[1] < g[0]:
            raise ValueError(f"parallel.groups: {list(map(list, out))} must be consecutive "
                             f"[first, last] ranges covering layers 0..{layers - 1}")
        expected = g[1] + 1
    if expected != layers:
        raise ValueError(f"parallel.groups: {list(map(list, out))} must cover layers 0..{layers - 1}")
    return out  # type: ignore[return-value]


def plan_front(windows: list[tuple[Window, Window]], size: tuple[int, int], grid: tuple[int, int],
               groups: list[tuple[int, int]]) -> list[GroupPlan]:
    """Plan every group of the partitioned front; a group's input is the previous one's output."""
    groups = check_groups(groups, len(windows))
    plans, (h, w) = [], size
    for first, last in groups:
        rows = plan_axis([wh for wh, _ in windows[first:last + 1]], h, grid[0], axis="row", first_layer=first)
        cols = plan_axis([ww for _, ww in windows[first:last + 1]], w, grid[1], axis="column",
                         first_layer=first)
        plans.append(GroupPlan(first, last, rows, cols))
        h, w = rows.sizes[-1], cols.sizes[-1]
    return plans
