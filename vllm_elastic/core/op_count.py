"""Count what a piece of code launches: aten ops and host syncs (counting, not timing).

The numbers are the same on a busy or an idle machine, and they predict the host overhead of a step
on a GPU: every aten op is a kernel launch or host work, every sync stalls the host until the device
catches up. A batched step launches the same ops whatever the number of requests.

Syncs counted: ``item``, ``tolist``, ``__bool__``, ``__int__``, ``__float__``, ``__index__``,
``cpu``, ``nonzero``, ``unique``, ``equal``, ``any``, ``all`` and boolean-mask indexing, on tensors.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_FUNCS = frozenset({
    "item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "nonzero",
    "unique", "equal", "any", "all",
})


class _OpMode(TorchDispatchMode):
    def __init__(self, counts: OpCounts) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts.aten_ops += 1
        if self.counts.ops_by_site is not None:
            site = _call_site()
            self.counts.ops_by_site[site] = self.counts.ops_by_site.get(site, 0) + 1
        return func(*args, **(kwargs or {}))


PACKAGE = Path(__file__).resolve().parents[1]  # vllm_elastic/


def _call_site() -> str:
    """``file.py:function`` of the innermost frame of this package that launched the op."""
    frame = sys._getframe(2)
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.is_relative_to(PACKAGE) and path.name != "op_count.py":
            return f"{path.relative_to(PACKAGE)}:{frame.f_code.co_name}"
        frame = frame.f_back
    return "(outside the package)"


class _SyncMode(TorchFunctionMode):
    def __init__(self, counts: OpCounts) -> None:
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        bool_index = (
            name == "__getitem__" and len(args) > 1 and isinstance(args[1], torch.Tensor)
            and args[1].dtype == torch.bool
        )
        if name in SYNC_FUNCS or bool_index:
            self.counts.syncs += 1
            self.counts.syncs_by[name] = self.counts.syncs_by.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


@dataclass(slots=True)
class OpCounts:
    """Counts of everything run while ``counting`` (or between ``start`` and ``stop``)."""

    aten_ops: int = 0
    syncs: int = 0
    syncs_by: dict[str, int] = field(default_factory=dict)
    ops_by_site: dict[str, int] | None = None  # a dict: also count ops by call site (slower)
    _modes: tuple = ()

    def start(self) -> None:
        self._modes = (_SyncMode(self), _OpMode(self))
        for mode in self._modes:
            mode.__enter__()

    def stop(self) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(None, None, None)
        self._modes = ()

    def to_dict(self) -> dict:
        out = {"aten_ops": self.aten_ops, "syncs": self.syncs, "syncs_by": dict(self.syncs_by)}
        if self.ops_by_site is not None:
            out["ops_by_site"] = dict(sorted(self.ops_by_site.items(), key=lambda kv: -kv[1]))
        return out


def counting(fn, by_site: bool = False) -> OpCounts:
    """The counts of one call of ``fn`` (``by_site``: also per launching function)."""
    counts = OpCounts(ops_by_site={} if by_site else None)
    counts.start()
    try:
        fn()
    finally:
        counts.stop()
    return counts
