"""FPGA cost of an ONNX model (Ma et al.-style accelerator): reads ONNX, never the channel graph."""
