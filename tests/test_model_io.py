"""Model files: zoo names, the safe cgap-graph format, state dicts with --arch, trusted pickles,
and one-line errors for everything else."""

import pytest
import torch

import cgap_graph as cg
from cgap_graph import zoo
from cgap_graph.errors import CgapError, ModelLoadError
from cgap_graph.io.model_io import load_model, save_model
from cgap_graph.surgery import apply_selection


def test_zoo_name_and_width():
    loaded = load_model("resnet20", width=0.5)
    assert loaded.source == "zoo" and loaded.input_shape == (1, 3, 32, 32)
    assert loaded.model.conv1.out_channels == 8


@pytest.mark.parametrize("name", zoo.names())
def test_safe_format_round_trip_without_the_class(tmp_path, name):
    model = zoo.build(name, width=0.5).eval()
    shape = zoo.input_shape(name)
    g = cg.trace(model, shape)
    path = tmp_path / "m.pt"
    assert save_model(g.module, path, meta={"input_shape": list(shape)}) == "cgap"
    obj = torch.load(path, weights_only=True)  # plain data: no code runs when opening it
    assert obj["format"] == "cgap-graph"
    loaded = load_model(str(path))
    assert loaded.source == "cgap" and loaded.input_shape == shape
    x = torch.randn(2, *shape[1:])
    assert torch.equal(loaded.model(x), model(x))
    # the loaded graph module can be traced and resized again
    g2 = cg.trace(loaded.model, shape)
    grp = next(gr for gr in g2.groups if gr.prunable)
    apply_selection(g2, {grp.id: [0]})


def test_pickle_needs_trust(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save(zoo.build("lenet5"), path)
    with pytest.raises(ModelLoadError, match="--trust") as exc:
        load_model(str(path))
    assert "\n" not in str(exc.value)
    assert load_model(str(path), trust=True).source == "pickle"


def test_state_dict_with_arch(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save({"state_dict": zoo.build("lenet5").state_dict(), "epoch": 3}, path)
    with pytest.raises(ModelLoadError, match="--arch"):
        load_model(str(path))
    loaded = load_model(str(path), arch="cgap_graph.zoo.lenet:LeNet5")
    assert loaded.source == "state_dict"
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_model(str(path), arch="cgap_graph.zoo.vgg:vgg16")
    with pytest.raises(ModelLoadError, match="cannot import"):
        load_model(str(path), arch="no_such_module:f")
    with pytest.raises(ModelLoadError, match="package.module:factory"):
        load_model(str(path), arch="nocolon")


def test_bad_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_text("not a model")
    with pytest.raises(ModelLoadError, match="not a PyTorch model file"):
        load_model(str(junk))
    good = tmp_path / "sd.pt"
    torch.save(zoo.build("lenet5").state_dict(), good)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_model(str(trunc))
    with pytest.raises(ModelLoadError, match="no file"):
        load_model(str(tmp_path / "missing.pt"))
    with pytest.raises(ModelLoadError, match="directory"):
        load_model(str(tmp_path))
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ModelLoadError, match="not a model"):
        load_model(str(tensor))


def test_save_never_overwrites_input_and_is_atomic(tmp_path):
    g = cg.trace(zoo.build("lenet5"), (1, 1, 28, 28))
    src = tmp_path / "in.pt"
    save_model(g.module, src)
    with pytest.raises(CgapError, match="input"):
        save_model(g.module, src, inputs=[src])
    with pytest.raises(CgapError, match="does not exist"):
        save_model(g.module, tmp_path / "nodir" / "out.pt")
    assert not list((tmp_path).glob(".*.tmp"))
