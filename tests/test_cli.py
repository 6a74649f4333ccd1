"""The cgap-graph command line: the README's first command, JSON, GraphML, and error exits."""

import json

import networkx as nx
import torch
from typer.testing import CliRunner

from cgap_graph import zoo
from cgap_graph.cli.app import app

runner = CliRunner()


def test_inspect_zoo_model_table():
    r = runner.invoke(app, ["inspect", "resnet20"])
    assert r.exit_code == 0, r.output
    assert "groups 13 (12 resizable)" in r.output and "frozen: model output" in r.output


def test_inspect_json_and_graphml(tmp_path):
    graph = tmp_path / "g.graphml"
    r = runner.invoke(app, ["inspect", "lenet5", "--json", "--graph", str(graph)])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["params"] == 431080 and data["flops"] == 4586000
    assert [grp["width"] for grp in data["groups"]] == [20, 50, 500, 10]
    assert data["groups"][1]["modules"] == ["conv2(out)", "fc1(in x16)"]
    g = nx.read_graphml(graph)
    assert g.nodes["group1"]["width"] == 50


def test_inspect_user_file(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(zoo.build("resnet20").state_dict(), path)
    r = runner.invoke(app, ["inspect", str(path), "--arch", "cgap_graph.zoo.resnet:resnet20",
                            "--input-shape", "1,3,32,32", "--verify"])
    assert r.exit_code == 0, r.output
    assert "verify: all" in r.output


def test_errors_exit_2_with_one_line():
    for args, needle in [
        (["inspect", "nope"], "no file 'nope'"),
        (["inspect", "resnet20", "--input-shape", "1,x"], "--input-shape '1,x' is invalid"),
        (["inspect", "resnet20", "--input-shape", "1,1,32,32"], "expected 3 input channels, got 1"),
        (["inspect", "resnet20", "--input-dtype", "complex"], "--input-dtype 'complex' is unknown"),
    ]:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert needle in r.output
        assert len([ln for ln in r.output.splitlines() if ln.strip()]) == 1


def test_zoo_listing():
    r = runner.invoke(app, ["zoo"])
    assert r.exit_code == 0
    for name in zoo.names():
        assert name in r.output
