"""Apply what can be applied: a pass that resizes many groups at once must not lose all of them
to one group that cannot be edited. The selections are tried together first (one validation);
if that fails, group by group, and each group that does not validate is left as it was and
reported with its one-line reason."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cgap_graph.errors import SurgeryError
from cgap_graph.ir.graph import ChannelGraph
from cgap_graph.surgery.select import apply_selection
from cgap_graph.surgery.types import SurgeryReport


def apply_each(cg: ChannelGraph, selections: Mapping[int, Sequence[int]], init: Any = "preserve",
               **kw: Any) -> tuple[SurgeryReport, dict[int, str]]:
    """``apply_selection`` of every group that validates; returns the combined report and
    ``{group id: reason}`` for the groups left unchanged."""
    try:
        return apply_selection(cg, selections, init, **kw), {}
    except SurgeryError as exc:
        if len(selections) <= 1:
            return apply_selection(cg, {}), {gid: str(exc) for gid in selections}
    reports, skipped = [], {}
    for gid, sel in selections.items():
        try:
            reports.append(apply_selection(cg, {gid: sel}, init, **kw))
        except SurgeryError as exc:
            skipped[gid] = str(exc)
    return (merge_reports(reports) if reports else apply_selection(cg, {})), skipped


def merge_reports(reports: list[SurgeryReport]) -> SurgeryReport:
    """One report for several surgery steps in a row: index maps composed, so positions refer to
    the tensors before the first step and ``old_params`` are those tensors."""
    first, last = reports[0], reports[-1]
    index: dict[str, dict[int, np.ndarray]] = {}
    new_mask: dict[str, dict[int, np.ndarray]] = {}
    old_params: dict = {}
    new_params: dict = {}
    for r in reports:
        for key, dims in r.index.items():
            acc, accm = index.setdefault(key, {}), new_mask.setdefault(key, {})
            for d, idx in dims.items():
                m = r.new_mask.get(key, {}).get(d, np.zeros(len(idx), dtype=bool))
                if d in acc:
                    m = m | accm[d][idx]
                    idx = acc[d][idx]
                acc[d], accm[d] = idx, m
        for key, t in r.old_params.items():
            old_params.setdefault(key, t)
        new_params.update(r.new_params)
    changed = sorted({k for r in reports for k in r.changed})
    return SurgeryReport(first.widths_before, last.widths_after, first.params_before, last.params_after, changed,
                         index, new_mask, old_params, new_params)
