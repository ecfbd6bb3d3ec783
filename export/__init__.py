"""ONNX and TFLite export of extracted subnets."""
