"""Replay: judge a runner by running the simulation on the runner's own activation codes.

Two correct runners compute a group's transform in float32 in different summation orders (ONNX Runtime
and PyTorch, and each of them differently on AVX2 and AVX-512). A value within float rounding of a
half-integer may then land on the neighbouring integer code, and from there on every later layer reads a
slightly different input: on a W4A4 model one such flip moves the logits by whole units, and how many
flips happen depends on the CPU. A noise floor cannot bound that on every CPU.

Replay removes the noise instead of bounding it. The simulation runs each batch once more, passing on the
runner's codes instead of its own in every group, so each group sees exactly the input the runner's group
saw (up to float order). Then every group's own codes must equal the runner's, except where float order
decided a tie: a few codes per group, each one step away, each within float rounding of its boundary in the
simulation (TIE_CODES / TIE_FRACTION / TIE_ROOM). And the logits, now computed from the same codes, must agree
to float precision (REPLAYED_MIN_SQNR_DB). A real defect (a wrong packing order, a dropped type gate, a
transposed factor, a wrong scale) moves codes far from any boundary in the group it breaks or in the next
one, or, in the last layer, moves the logits while every code agrees.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from freeact_export.ops.reference import unpack_int4
from freeact_export.rewrite.graphs import codes_name
from freeact_export.simulate.fake_quant import SimulatedLogits

# A group may differ in at most this many codes per batch (each by one): a value lands within float
# noise (1e-5 to 1e-4 steps) of a boundary for about that fraction of codes, times two; measured at most
# 5.4e-5 (8 of 147,456 codes, smollm2-135m layer 29 o_proj), so 1e-3 leaves room on every CPU,
TIE_CODES, TIE_FRACTION = 8, 1e-3
# each within TIE_ROOM code steps of its rounding boundary in the simulation. Why 1e-3: float32 carries
# 24 bits, and summation order moves a sum of n products by at most n·2⁻²⁴ of the sum of their
# magnitudes (Higham's bound); with n = d1 + d2 ≤ 256 for the Kronecker transforms, sums of magnitudes
# within ten times the sum itself and inputs already differing by upstream float order (~1e-6
# relative), a code's pre-rounding value (at most 127) moves by well under 1e-4 steps between two
# correct runners (measured ties: below 1e-5 steps, on tiny models and on smollm2-135m). A defect moves
# values by a sizeable part of a step, so the codes it flips lie anywhere up to half a step from a boundary.
TIE_ROOM = 1e-3
# With the same codes, two float32 runs differ by summation order alone: ~1e-6 of the logits'
# norm (120 dB). 60 dB (0.1 %) leaves room for long models and still fails any defect that moves the
# logits by a visible amount.
REPLAYED_MIN_SQNR_DB = 60.0


def runner_codes(outputs: dict, index: int, packed: bool) -> np.ndarray | None:
    """A group's activation codes as int32 [..., d], from any runner's form of them (None: not tapped)."""
    name = codes_name(index)
    if name not in outputs:
        return None
    value = outputs[name]
    return unpack_int4(value).astype(np.int32) if packed else np.rint(value).astype(np.int32)


def tie_like(differ: int, step: int, codes: int, room: float = 0.0) -> bool:
    """What rounding ties decided by float order look like: a few codes, each one step away, each (where
    the reference's pre-rounding values are known) within TIE_ROOM of its rounding boundary."""
    return step == 1 and differ <= max(TIE_CODES, TIE_FRACTION * codes) and room <= TIE_ROOM


def _simulate(simulated: SimulatedLogits, feed: dict) -> tuple[np.ndarray, list[np.ndarray | None], list]:
    """Logits, each group's own codes [B, T, d] and their tie rooms, for one batch (forced codes passed on)."""
    ids = feed["input_ids"]
    for path in simulated.paths:
        path.recorded, path.tie_room = [], []
    try:
        logits = simulated(ids, feed.get("attention_mask")).numpy()
        codes = [path.recorded[0].codes.reshape(*ids.shape, -1).numpy().astype(np.int32) if path.recorded else None
                 for path in simulated.paths]
        rooms = [path.tie_room[0].reshape(*ids.shape, -1).numpy() if path.tie_room else None
                 for path in simulated.paths]
    finally:
        for path in simulated.paths:
            path.recorded = path.tie_room = None
    return logits, codes, rooms


def replay(simulated: SimulatedLogits, feeds: list[dict], outputs: list[dict], group_names: list[str],
           packed: bool, runner: str) -> dict:
    """Replay `runner`'s codes (its `outputs` on `feeds`) in the simulation; the comparison record.

    Args:
        simulated: the plan's simulation (its paths' forced codes are cleared again on return).
        feeds: the inputs every runner ran on.
        outputs: the runner's outputs per feed: logits and each group's codes (codes_name).
        group_names: the plan's groups, in path order.
        packed: the runner returns packed INT4 codes (the plugin graph at W4A4).
        runner: its name, for the record.
    """
    ties, diverging = [], None
    signal = noise = max_abs = 0.0
    try:
        for batch, (feed, theirs_all) in enumerate(zip(feeds, outputs, strict=True)):
            keep = feed["attention_mask"].astype(bool)  # padded rows feed nothing valid: not judged
            theirs = [runner_codes(theirs_all, i, packed) for i in range(len(group_names))]
            where = torch.from_numpy(np.ascontiguousarray(keep[..., None]))
            for path, codes in zip(simulated.paths, theirs, strict=True):
                path.forced = None if codes is None else (where, torch.from_numpy(codes))
            logits, ours, rooms = _simulate(simulated, feed)
            for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
                if a is None or b is None or not bool((a != b)[keep].any()):
                    continue
                differ = (a != b) & keep[..., None]
                count, step = int(differ.sum()), int(np.abs(a - b)[differ].max())
                room = float(rooms[index][differ].max())
                ties.append({"batch": batch, "group": group_names[index], "codes_different": count,
                             "codes": int(keep.sum()) * a.shape[-1], "max_code_difference": step,
                             "max_tie_room": room})
                if diverging is None and not tie_like(count, step, ties[-1]["codes"], room):
                    diverging = f"{group_names[index]} ({codes_name(index)}, batch {batch}: {count} codes differ, " \
                                f"up to {step} steps, up to {room:.2g} steps from a rounding boundary)"
            la, lb = logits[keep].astype(np.float64), theirs_all["logits"][keep].astype(np.float64)
            max_abs = max(max_abs, float(np.abs(la - lb).max()))
            signal += float((la**2).sum())
            noise += float(((la - lb) ** 2).sum())
    finally:
        for path in simulated.paths:
            path.forced = None
    sqnr = 10 * math.log10(signal / noise) if noise > 0 else math.inf
    return {"pair": ["simulation", runner], "ties": len(ties), "replayed": ties,
            "first_diverging": diverging, "replayed_logits_sqnr_db": sqnr, "replayed_logits_max_abs_diff": max_abs,
            "passed": bool(diverging is None and sqnr >= REPLAYED_MIN_SQNR_DB)}
