"""filterd's training pipeline: corpus → vocabulary → RNN → ONNX artifact. Torch lives only here."""
