"""Calibrate an ONNX decoder LM with ONNX Runtime: the same record the PyTorch frontend makes.

Each group's input tensor is added as a graph output; windows run in batches sized to a memory
budget, and every window's activations go into the group's StatsTap at once, so statistics
are accumulated and activations never held beyond one batch. Windows are fed to the taps one
at a time in order, as the PyTorch frontend does, so the same windows and seed keep the same
samples.
"""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import torch
from tqdm import tqdm

from freeact_export.calibrate.massive import MassiveTokens
from freeact_export.calibrate.run import CalibrationRecord, checked_record
from freeact_export.calibrate.stats import StatsTap
from freeact_export.config import CalibSpec
from freeact_export.errors import UserError
from freeact_export.onnx_in.feeds import PrefillFeeds
from freeact_export.onnx_in.graph import OnnxModel
from freeact_export.onnx_in.session import exact_session_options, providers_for, session_with_outputs
from freeact_export.token_types import TokenTypes

BATCH_BUDGET_BYTES = 1 << 30  # activations of all groups for one batch of windows


def tapped_session(onnx_model: OnnxModel, tensors: list[str], device: str = "cpu") -> ort.InferenceSession:
    """A session of the graph with `tensors` added as outputs (the model file is not touched)."""
    weights = {i.name: i.data_type for i in onnx_model.model.graph.initializer}
    dtypes = {lin.activation: weights[lin.weight] for lin in onnx_model.linears.values()}
    try:
        session = session_with_outputs(onnx_model.model, onnx_model.path.parent, {t: dtypes[t] for t in tensors},
                                       exact_session_options(), providers_for(device))
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - ORT raises its own pybind types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"ONNX Runtime cannot run {onnx_model.path}: {first}") from None
    return session


def calibrate_onnx(onnx_model: OnnxModel, windows: np.ndarray, token_types: TokenTypes, spec: CalibSpec,
                   device: str = "cpu", progress: bool = True) -> CalibrationRecord:
    """Run every window through the graph and collect each group's input statistics."""
    groups = onnx_model.groups
    activation = {g.name: onnx_model.linears[g.linears[0]].activation for g in groups}
    keep = math.ceil(spec.samples_per_type / len(windows))
    taps = {g.name: StatsTap(g.in_features, token_types.num_types, keep, seed=spec.seed * 100_003 + index)
            for index, g in enumerate(groups)}
    massive = MassiveTokens()
    per_window = windows.shape[1] * sum(g.in_features for g in groups) * 4
    batch = max(1, min(len(windows), BATCH_BUDGET_BYTES // max(per_window, 1)))
    names = [activation[g.name] for g in groups]
    session = tapped_session(onnx_model, names, device)
    feeds = PrefillFeeds(session.get_inputs(), str(onnx_model.path))
    with tqdm(total=len(windows), desc="calibration (onnxruntime)", unit="window", disable=not progress) as bar:
        for start in range(0, len(windows), batch):
            ids = windows[start:start + batch]
            outputs = dict(zip(names, session.run(names, feeds(ids)), strict=True))
            types = token_types.assign(torch.from_numpy(ids))
            for row in range(len(ids)):
                for g in groups:
                    x = outputs[activation[g.name]].reshape(len(ids), -1, g.in_features)[row]
                    taps[g.name].add(torch.from_numpy(x), types[row].reshape(-1))
                massive.add_window(torch.from_numpy(ids[row]), [tap.last_token_absmax for tap in taps.values()])
                bar.update(1)
            del outputs
    stats = {name: tap.stats for name, tap in taps.items()}
    return checked_record(token_types, groups, stats, spec, massive)
