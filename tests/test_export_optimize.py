"""``export_onnx(optimize=False)`` skips the exporter's ONNX optimiser (a sixth of Swin-T's export
time, benchmarks/export_profile.py) and still passes the same checks: ONNX checker, and ONNX
Runtime == PyTorch within 1e-4 x max(1, max |output|) at two batch sizes."""

from cgap_graph import zoo
from cgap_graph.passes.export import export_onnx
from cgap_graph.verify import make_responsive


def test_export_without_optimizer_matches(tmp_path):
    model = make_responsive(zoo.build("lenet5"), input_shape=zoo.input_shape("lenet5")).eval()
    rep = export_onnx(model, zoo.input_shape("lenet5"), tmp_path / "m.onnx", optimize=False)
    assert rep.exporter == "dynamo" and (tmp_path / "m.onnx").exists()
    assert rep.max_abs_diff <= 1e-4 * max(1.0, rep.output_scale)
