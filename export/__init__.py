"""Offline steps that make deployable artifacts: ONNX export, TensorRT engines, LoRA merge, quantization, bundles."""
