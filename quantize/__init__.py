"""Exporters: GGUF (llama.cpp), ONNX (onnxruntime) and GPTQ builds with parity checks."""
