"""Running the command line in-process as a user would (exit code, stdout, stderr), and crafting
the hostile model files a careless or malicious source could hand a user."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import torch

import cgap_graph as cg
from cgap_graph.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


def run_cli(*args) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return Result(code, out.getvalue(), err.getvalue())


def saved_lenet(path: Path) -> Path:
    g = cg.trace(cg.zoo.build("lenet5", width=0.25), (1, 1, 28, 28))
    cg.save_model(g.module, path, meta={"input_shape": [1, 1, 28, 28]})
    return path


# each hostile kind, given the marker path a payload would create
HOSTILE = ("exec", "open", "os_system", "method_injection", "kwarg_injection", "state_key_injection",
           "getattr_class", "dtype_function", "module_type", "class_name_injection")


def hostile_file(path: Path, kind: str, marker: Path) -> Path:
    """A cgap-graph file with one payload added: if any of them runs, ``marker`` appears."""
    saved_lenet(path)
    p = torch.load(path, weights_only=True)
    spec = json.loads(p["graph"])
    nodes = spec["nodes"]
    x = nodes[0]["name"]
    code = f"open({str(marker)!r}, 'w').write('pwned')"
    empty = {"__dict__": []}
    inject = f'relu"), exec({code!r}), getattr({x}, "relu'
    payload = {
        "exec": {"name": "p", "op": "call_function", "target": "builtins.exec", "args": [code], "kwargs": empty},
        "open": {"name": "p", "op": "call_function", "target": "builtins.open", "args": [str(marker), "w"],
                 "kwargs": empty},
        "os_system": {"name": "p", "op": "call_function", "target": "torch.os.system",
                      "args": [f"touch {marker}"], "kwargs": empty},
        "method_injection": {"name": "p", "op": "call_method", "target": inject, "args": [{"__node__": x}],
                             "kwargs": empty},
        "kwarg_injection": {"name": "p", "op": "call_function", "target": "torch.relu", "args": [{"__node__": x}],
                            "kwargs": {"__dict__": [[f"inplace=False, _x=exec({code!r})", False]]}},
        "getattr_class": {"name": "p", "op": "call_function", "target": "builtins.getattr",
                          "args": [{"__node__": x}, "__class__"], "kwargs": empty},
        "dtype_function": {"name": "p", "op": "call_method", "target": "to", "args": [{"__node__": x},
                           {"__dtype__": "load"}], "kwargs": empty},
    }.get(kind)
    if payload is not None:
        nodes.insert(1, payload)
    elif kind == "state_key_injection":
        key = f'w"), exec({code!r}), getattr(self, "w'
        p["state_dict"][key] = torch.zeros(1)
        nodes.insert(1, {"name": "p", "op": "get_attr", "target": key, "args": [], "kwargs": empty})
    elif kind == "module_type":
        name = next(iter(spec["modules"]))
        spec["modules"][name]["type"] = "torch.hub.load"
    elif kind == "class_name_injection":
        spec["class_name"] = f"G(): pass\nexec({code!r})\nclass H"
    p["graph"] = json.dumps(spec)
    torch.save(p, path)
    return path
