"""Frozen, versioned settings shared by the stages; to/from dict rejects unknown keys."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")

SCHEMA_VERSION = 1


def _from_dict(cls: type[T], data: dict[str, Any]) -> T:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names - {"schema_version"})
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {unknown}")
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """Perplexity protocol of shared/EVAL.md: non-overlapping windows of the eval split.

    Attributes:
        seqlen: tokens per window (the window's own tokens; a BOS context token, where the
            tokenizer adds one by default, comes on top).
        windows: how many windows from the start of the eval text; fewer are used (and
            reported) only when the corpus is shorter.
    """

    seqlen: int = 1024
    windows: int = 32

    def __post_init__(self) -> None:
        if self.seqlen < 2:
            raise ValueError(f"seqlen must be at least 2 (got {self.seqlen})")
        if self.windows < 1:
            raise ValueError(f"windows must be at least 1 (got {self.windows})")

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalSpec:
        return _from_dict(cls, data)


EXTERNAL_DATA_CHOICES = ("auto", "always", "never")


@dataclasses.dataclass(frozen=True)
class ExportSpec:
    """How the floating-point prefill graph is written.

    Attributes:
        opset: ONNX opset of the default domain (21 is the first with INT4 DequantizeLinear,
            which the portable lowering needs later).
        external_data: "auto" stores weights in `model.onnx.data` when they would push the
            protobuf past its 2 GB limit; "always" / "never" force the choice.
        verify: run ONNX Runtime on sample text after export and record the max abs
            difference of its logits against PyTorch's.
    """

    opset: int = 21
    external_data: str = "auto"
    verify: bool = True

    def __post_init__(self) -> None:
        if self.external_data not in EXTERNAL_DATA_CHOICES:
            raise ValueError(f"external_data must be one of {EXTERNAL_DATA_CHOICES}")
        if self.opset < 18:
            raise ValueError(f"opset must be at least 18 (got {self.opset})")

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportSpec:
        return _from_dict(cls, data)
