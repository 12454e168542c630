"""Frozen, versioned settings shared by the stages; to/from dict rejects unknown keys."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")

SCHEMA_VERSION = 1


class _Versioned:
    """to_dict / from_dict for a frozen dataclass; unknown keys are an error, not ignored."""

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - {"schema_version"})
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown keys {unknown}")
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclasses.dataclass(frozen=True)
class EvalSpec(_Versioned):
    """Perplexity protocol of docs/evaluation.md: non-overlapping windows of the eval split.

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


EXTERNAL_DATA_CHOICES = ("auto", "always", "never")
EXPORT_DTYPES = ("float32", "float16", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ExportSpec(_Versioned):
    """How the floating-point prefill graph is written.

    Attributes:
        opset: ONNX opset of the default domain (21 is the first with INT4 DequantizeLinear,
            which the portable lowering needs later).
        external_data: "auto" stores weights in `model.onnx.data` when they would push the
            protobuf past its 2 GB limit; "always" / "never" force the choice.
        verify: run ONNX Runtime on sample text after export and record the max abs
            difference of its logits against PyTorch's.
        dtype: the graph's floating-point type (weights, activations, logits).
        kv_cache: also take the past keys/values per layer (past_key_values.{i}.key|value
            [batch, kv heads, past, head dim]) and return the new ones (present.{i}.key|value),
            as Optimum and onnxruntime-genai lay them out: a graph that can decode.
    """

    opset: int = 21
    external_data: str = "auto"
    verify: bool = True
    kv_cache: bool = False
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.external_data not in EXTERNAL_DATA_CHOICES:
            raise ValueError(f"external_data must be one of {EXTERNAL_DATA_CHOICES}")
        if self.dtype not in EXPORT_DTYPES:
            raise ValueError(f"dtype must be one of {EXPORT_DTYPES} (got {self.dtype})")
        import onnx

        newest = onnx.defs.onnx_opset_version()  # the exporter cannot write an opset onnx does not know
        if not 18 <= self.opset <= newest:
            raise ValueError(f"opset must lie in 18..{newest} (got {self.opset}; 21, the default, is the first "
                             "with INT4)")


GRANULARITIES = ("channel", "group", "token", "tensor")
CODE_RANGES = ("symmetric", "full")


@dataclasses.dataclass(frozen=True)
class QuantSpec(_Versioned):
    """One quantizer: integer width, symmetry and what shares a scale.

    Attributes:
        bits: 4 or 8.
        symmetric: codes in [-2^(b-1), 2^(b-1)-1] with scale = absmax / (2^(b-1)-1), so the
            most negative code is never produced and negation is exact; asymmetric codes in
            [0, 2^b - 1] with a zero point.
        granularity: "channel" (one scale per output row of a weight), "group" (per
            `group_size` consecutive inputs of a row), "token" (per row of activations, at
            run time) or "tensor".
        group_size: inputs per group when granularity == "group".
        clip_ratio: fraction of the range kept before rounding (1.0 = no clipping).
        code_range: weights only. "symmetric": as above; "full": ONNX Runtime's INT4 rule, all
            2^b codes: the slice's extreme value lands exactly on -2^(b-1), so scale =
            extreme / -2^(b-1) carries the sign opposite to the extreme's (scales may be negative).
        clip_search: weights only. Each slice's clip is searched (QuaRot's w_clip: shrink factors
            1, 0.99, ..., 0.21, keeping the one with the least sum |dequantized - w|^2.4) on top of
            clip_ratio, unless a learned clip is given.
    """

    bits: int = 4
    symmetric: bool = True
    granularity: str = "channel"
    group_size: int = 0
    clip_ratio: float = 1.0
    code_range: str = "symmetric"
    clip_search: bool = False

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8 (got {self.bits})")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES} (got {self.granularity})")
        if (self.granularity == "group") != (self.group_size > 0):
            raise ValueError("group_size is set exactly when granularity is 'group'")
        if not 0.0 < self.clip_ratio <= 1.0:
            raise ValueError(f"clip_ratio must be in (0, 1] (got {self.clip_ratio})")
        if self.code_range not in CODE_RANGES:
            raise ValueError(f"code_range must be one of {CODE_RANGES} (got {self.code_range})")
        if self.code_range == "full" and not self.symmetric:
            raise ValueError("code_range 'full' is a symmetric rule; asymmetric codes use every code already")
        if (self.code_range == "full" or self.clip_search) and self.granularity == "token":
            raise ValueError("code_range 'full' and clip_search are weight rules; activations are quantized at run "
                             "time by the kernels' fixed rule")


@dataclasses.dataclass(frozen=True)
class WeightOptions(_Versioned):
    """How weights are rounded, on top of a bit setting's standard quantizer (docs/evaluation.md).

    Attributes:
        clip_search: search each weight slice's clip (QuantSpec.clip_search).
        code_range: "symmetric" (±(2^(b-1)-1)) or "full" (ONNX Runtime's rule; QuantSpec.code_range).
        act_order: GPTQ quantizes columns in order of decreasing Hessian diagonal (GPTQ's
            act-order; groups keep their contiguous inputs: their scales are fixed before).
        group_size: W4A16 only: None for the protocol's groups (128, or the largest power of two
            below it that divides the input), 0 for one scale per output channel, or a size
            that must divide every group's input.
    """

    clip_search: bool = False
    code_range: str = "symmetric"
    act_order: bool = False
    group_size: int | None = None

    def __post_init__(self) -> None:
        if self.code_range not in CODE_RANGES:
            raise ValueError(f"weight code range must be one of {', '.join(CODE_RANGES)} (got {self.code_range})")
        if self.group_size is not None and (self.group_size < 0 or self.group_size % 2):
            raise ValueError(f"group size must be 0 (per channel) or a positive even number (got {self.group_size})")

    def label(self) -> str:
        """What differs from the standard rounding, for table rows and reports ('' when nothing does)."""
        parts = (["clip-search"] if self.clip_search else []) + (["full-range"] if self.code_range == "full" else [])
        parts += ["act-order"] if self.act_order else []
        if self.group_size is not None:
            parts.append("per-channel" if self.group_size == 0 else f"g{self.group_size}")
        return ",".join(parts)


BITS_PRESETS = ("w4a4", "w4a8", "w4a16")


def protocol_group(in_features: int) -> int:
    """W4A16's group size (docs/evaluation.md): 128, or the largest power of two below it that
    divides the input (576 -> 64); 0 (per channel) for an odd input."""
    group = 128
    while in_features % group:
        group //= 2
    return group if group > 1 else 0


def bits_preset(name: str, in_features: int,
                options: WeightOptions = WeightOptions()) -> tuple[QuantSpec, QuantSpec | None]:
    """The standard settings of docs/evaluation.md: (weight quantizer, activation quantizer or None).

    W4A4 / W4A8: INT4 symmetric per output channel, INT4 / INT8 symmetric per token.
    W4A16: INT4 symmetric in groups (protocol_group, or options.group_size), activations in
    floating point. `options` adds the clip search and the full code range to the weights.

    Raises:
        ValueError: an unknown name, a group size given for W4A4 / W4A8, or one that does not divide
            `in_features`.
    """
    rounding = {"code_range": options.code_range, "clip_search": options.clip_search}
    if name == "w4a16":
        group = protocol_group(in_features) if options.group_size is None else options.group_size
        if group and in_features % group:
            raise ValueError(f"group size {group} does not divide an input of {in_features} features")
        return QuantSpec(4, True, "group" if group else "channel", group, **rounding), None
    if name in ("w4a4", "w4a8"):
        if options.group_size is not None:
            raise ValueError(f"a weight group size applies to w4a16 only; {name} weights are per output channel "
                             "(docs/evaluation.md)")
        return QuantSpec(4, True, "channel", **rounding), QuantSpec(int(name[-1]), True, "token")
    raise ValueError(f"bits must be one of {BITS_PRESETS} (got {name})")


@dataclasses.dataclass(frozen=True)
class CalibSpec(_Versioned):
    """Calibration data per docs/evaluation.md: windows at uniformly random offsets, seed 0.

    Attributes:
        windows / seqlen: how many windows of how many tokens (CPU preset: 32 x 512).
        samples_per_type: activation rows kept per group and type for learning methods.
        min_tokens: fewer tokens of a type than this is an error naming the type.
        seed: the offsets' seed (stays 0 across method seeds, so every method sees the same data).
    """

    windows: int = 32
    seqlen: int = 512
    samples_per_type: int = 2048
    min_tokens: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.windows < 1 or self.seqlen < 2:
            raise ValueError(f"calibration needs at least 1 window of 2 tokens (got {self.windows} x {self.seqlen})")
        if self.samples_per_type < 0 or self.min_tokens < 1:
            raise ValueError("samples_per_type must be >= 0 and min_tokens >= 1")


# Above this many parameters a PyTorch model is quantized and evaluated one decoder layer at a time
# (--layerwise auto): its float32 copy (4 GB) would no longer leave room on a 24 GB machine for
# the statistics and learning of the bigger models' layers. The GGUF conversion keeps float32 up to here too.
LAYERWISE_ABOVE_PARAMS = 10**9

# Calibration presets (docs/evaluation.md): the CPU one says what it trades away in its name.
CALIB_PRESETS = {
    "cpu": CalibSpec(windows=32, seqlen=512, samples_per_type=8192),
    "gpu": CalibSpec(windows=128, seqlen=1024, samples_per_type=8192),
}


@dataclasses.dataclass(frozen=True)
class FreeActSpec(_Versioned):
    """Learning settings of FreeAct (and FlatQuant-style, its one-type case).

    Attributes:
        steps: AdamW steps per linear group.
        lr: learning rate of the transform factors, smoothing and clipping logits.
        batch_tokens: tokens per type in each step's minibatch (drawn from calibration samples).
        dedicated_fraction: r_k / d, the dimensions dedicated to each type (paper: 1/32).
        init: "hadamard" (where both Kronecker factors have one, else orthogonal) or "orthogonal".
        type_weighting: "tokens" sums the squared error over all calibration tokens, so each
            type weighs by its share of tokens (the objective in docs/design.md); "equal" gives every type's
            relative error the same weight (rare types such as sinks count as much as the rest).
        clip_start: "search" starts the learned clips where a search puts them (each weight row's
            by QuaRot's clip search, each type's activation clip by a grid on the objective);
            "none" starts them at 0.993 (no clipping), as FlatQuant does and as records before it did.
        continue_shared: in the second half of learning, also continue the shared transform (no masks,
            no per-type factors) and keep whichever ends lower; off, the masked / per-type branch
            is kept where it ends below the first half's result (a third less learning).
            Only for the older schedule (branch_steps 0).
        branch_steps: 0: the older schedule, the shared transform learns steps / 2, the masked or
            per-type branch the other half. N > 0: the shared transform learns all `steps` (as the
            one-type method does, so a group whose branch does not pay keeps that result), then the
            branch learns N steps from it.
    """

    steps: int = 100
    lr: float = 5e-3
    batch_tokens: int = 256
    dedicated_fraction: float = 1 / 32
    init: str = "hadamard"
    type_weighting: str = "tokens"
    clip_start: str = "search"
    continue_shared: bool = True
    branch_steps: int = 0

    def __post_init__(self) -> None:
        if self.clip_start not in ("search", "none"):
            raise ValueError(f"clip_start must be 'search' or 'none' (got {self.clip_start})")
        if self.init not in ("hadamard", "orthogonal"):
            raise ValueError(f"init must be 'hadamard' or 'orthogonal' (got {self.init})")
        if self.type_weighting not in ("tokens", "equal"):
            raise ValueError(f"type_weighting must be 'tokens' or 'equal' (got {self.type_weighting})")
        if self.branch_steps < 0:
            raise ValueError(f"branch_steps must be 0 or more (got {self.branch_steps})")
        if not 0.0 <= self.dedicated_fraction < 0.5:
            raise ValueError(f"dedicated_fraction must be in [0, 0.5) (got {self.dedicated_fraction})")


# cpu: about 30 minutes for smollm2-135m on 2 cores, within a few per cent of the gpu preset's learned
# objectives (docs/evaluation.md, the preset screen); the searched clip start is most of what closes the gap.
# Its branch comes after all 200 shared steps (branch_steps): a group whose branch does not pay keeps
# FlatQuant-style's result, not a half-learned one (screen: 1.5 % lower objective, 8 % more time).
FREEACT_PRESETS = {
    "cpu": FreeActSpec(steps=200, batch_tokens=512, lr=2e-2, branch_steps=50),
    "gpu": FreeActSpec(steps=1500, batch_tokens=1024),
}
