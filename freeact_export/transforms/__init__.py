"""Invertible transforms of a linear layer's input space (Hadamard, orthogonal, Kronecker, smoothing)."""
