"""The two custom ONNX ops (FreeActQuantize, Int4MatMul): one declaration, a NumPy reference, ORT registration.

`schema` is the contract the graph rewrite, the ONNX Runtime custom ops and the TensorRT plugin
creators all check against; `reference` is the executable meaning of that contract.
"""
