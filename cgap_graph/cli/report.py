"""Human-readable and JSON reports of a channel graph."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from torch import nn

from cgap_graph.ir.graph import ChannelGraph, Group
from cgap_graph.rules.registry import module_rule

_PRODUCERS = (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding)


def member_labels(cg: ChannelGraph, g: Group) -> list[str]:
    """One label per module a group touches: ``conv1(out)``, ``bn1``, ``fc1(in x16)``."""
    root = cg.traced.root
    labels: dict[str, None] = {}
    for m in g.members:
        if m.kind != "param":
            continue
        path, _, pname = m.target.rpartition(".")
        try:
            mod = root.get_submodule(path) if path else root
        except AttributeError:
            mod = None
        is_param_of_module = mod is not None and (pname in mod._parameters or pname in mod._buffers)
        name = path or pname
        if isinstance(mod, _PRODUCERS) and pname == "weight":
            tag = "out" if m.role == "produce" else "in"
            label = f"{name}({tag}" + (f" x{m.per_unit}" if m.per_unit > 1 else "") + ")"
        elif isinstance(mod, _PRODUCERS) and pname == "bias":
            continue
        elif mod is not None and is_param_of_module and not isinstance(mod, _PRODUCERS) and \
                module_rule(mod) is not None:
            label = name
        else:
            label = f"{m.target}[{m.dim}]" + ("" if m.role != "consume" else "(in)")
        labels.setdefault(label, None)
    return list(labels)


def group_rows(cg: ChannelGraph) -> list[dict[str, Any]]:
    rows = []
    for g in cg.groups:
        d = g.summary()
        d["modules"] = member_labels(cg, g)
        rows.append(d)
    return rows


def summary(cg: ChannelGraph, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {
        "inputs": [{"shape": list(s.shape), "dtype": str(s.dtype).replace("torch.", "")} for s in cg.input_specs],
        "params": cg.param_count(),
        "flops": cg.flops(),
        "nodes": len(cg.graph.nodes),
        "groups": group_rows(cg),
        "unknown_ops": [{"node": n, "op": op, "reason": r} for n, op, r in cg.unknown_ops],
        "opaque_modules": dict(cg.opaque_modules),
        "specialised": [{"node": n.name, "why": why, "where": loc} for n, why, loc in cg.traced.guards],
    }
    if extra:
        out.update(extra)
    return out


def fmt_count(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def print_inspect(cg: ChannelGraph, title: str, console: Console, extra_lines: list[str] = (),
                  max_members: int = 6) -> None:
    s = summary(cg)
    resizable = sum(1 for g in cg.groups if g.resizable)
    console.print(f"[bold]{escape(title)}[/bold]")
    shapes = ", ".join("x".join(map(str, i["shape"])) + ("" if i["dtype"] == "float32" else f" {i['dtype']}")
                       for i in s["inputs"])
    console.print(f"input {shapes}   parameters {s['params']:,} ({fmt_count(s['params'])})   "
                  f"FLOPs {fmt_count(s['flops'])}"
                  f"   nodes {s['nodes']}   groups {len(cg.groups)} ({resizable} resizable)")
    for line in extra_lines:
        console.print(escape(line))
    table = Table(show_lines=False, header_style="bold")
    table.add_column("group", justify="right")
    table.add_column("width", justify="right")
    table.add_column("members")
    table.add_column("status")
    for row in s["groups"]:
        mods = row["modules"]
        shown = escape(" ".join(mods[:max_members]))
        if len(mods) > max_members:
            shown += f" (+{len(mods) - max_members})"
        if row["frozen"]:
            status = f"[red]frozen[/red]: {escape(row['frozen'])}"
        else:
            status = "[green]prunable, growable[/green]" if row["prunable"] else "[green]growable[/green] (width 1)"
            if row.get("prune_exact_kept_stats"):
                status += " [green]exact against kept-channel statistics[/green]"
            if row["notes"]:
                word = "growth inexact" if row.get("prune_exact_kept_stats") else "inexact"
                status += f" [yellow]{word}[/yellow]: {escape(row['notes'][0])}" + (
                    f" (+{len(row['notes']) - 1})" if len(row["notes"]) > 1 else "")
        table.add_row(str(row["id"]), str(row["width"]), shown, status)
    console.print(table)
    if s["unknown_ops"]:
        n = len(s["unknown_ops"])
        console.print(f"[yellow]{n} op(s) without a channel rule froze the groups they touch:[/yellow]")
        for u in s["unknown_ops"][:20]:
            console.print(escape(f"  {u['op']} (node {u['node']}): {u['reason']}"))
    if s["opaque_modules"]:
        console.print("[yellow]modules traced as opaque leaves:[/yellow]")
        for name, why in s["opaque_modules"].items():
            console.print(escape(f"  {name}: {why}"))
    for sp in s["specialised"][:10]:
        console.print(f"[yellow]note[/yellow]: graph specialised at {escape(sp['where'])} ({escape(sp['why'])})")
