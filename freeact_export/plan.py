"""The quantization plan: what every later stage consumes, as tensors plus a small JSON schema.

Per linear group (layers sharing one input x [.., d]) the plan states the activation path

    x̃_k = Q_a( ((x / smooth) · T) ⊙ mask[k] ; clip[k] )      k = the token's type

with T the online transform ("identity", "dense" matrix, "kronecker" T1 ⊗ T2, or "hadamard":
diag(signs) · H_d), and for every consumer linear the integer codes and scales of its weight
already multiplied by diag(smooth) · T⁻ᵀ offline (in float64), so that y = x̃ · dequant(W̃)ᵀ + b.
No PyTorch module and no ONNX graph is referenced: a plan is loadable on its own.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from freeact_export import manifest
from freeact_export.config import QuantSpec
from freeact_export.files import atomic_path
from freeact_export.mapped import read_safetensors, write_safetensors

PLAN_VERSION = 1
PLAN_JSON, PLAN_TENSORS = "plan.json", "plan.safetensors"
TRANSFORM_KINDS = ("identity", "dense", "kronecker", "hadamard")
# Tensor keys of the online transform (smoothing and T), then every key a group may hold
# (besides per-linear "w{i}.codes|scale|zero|bias").
# "type_kron_1|2" are per-type activation factors (FreeAct's general variant); the weights are
# folded with the shared "kron_1|2" alone.
ONLINE_TENSORS = ("smooth", "matrix", "kron_1", "kron_2", "signs", "type_kron_1", "type_kron_2")
GROUP_TENSORS = (*ONLINE_TENSORS, "masks", "clip")


@dataclasses.dataclass
class LinearPlan:
    """One consumer of a group: quantized transformed weight [out, in] and its bias."""

    name: str
    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None = None
    bias: torch.Tensor | None = None


@dataclasses.dataclass
class GroupPlan:
    """Activation path of one group and the weights of its consumers.

    Attributes:
        name / in_features: as in calibration.
        transform: one of TRANSFORM_KINDS (see the module docstring).
        tensors: "smooth" [d]; "matrix" [d, d] | "kron_1" [d1, d1] + "kron_2" [d2, d2] |
            "signs" [d]; "masks" [K, d] (0/1, absent = all ones); "clip" [K] activation clip;
            "type_kron_1" [K, d1, d1] + "type_kron_2" [K, d2, d2] (kronecker only): type k's tokens
            take these factors instead of the shared pair, which still folds the weights.
        linears: the consumers, in module order.
        weight_spec: their weights' quantizer (config.bits_preset: W4A16's group size depends on d).
    """

    name: str
    in_features: int
    transform: str
    tensors: dict[str, torch.Tensor]
    linears: list[LinearPlan]
    weight_spec: QuantSpec


@dataclasses.dataclass
class Plan:
    """A whole model's plan.

    Attributes:
        method: e.g. "rtn", "quarot", "freeact".
        bits: "w4a4", "w4a8" or "w4a16".
        act_spec: the activation quantizer (None = activations stay float).
        token_types: rule text (freeact_export.token_types).
        groups: one GroupPlan per linear group.
        info: free-form provenance (model, calibration, seeds, timings).
        model: the model it was made for, {"architecture", "num_layers"} (manifest.describe_*; the
            layers' names and shapes come from the groups); recorded in the folder's manifest.
    """

    method: str
    bits: str
    act_spec: QuantSpec | None
    token_types: str
    groups: list[GroupPlan]
    info: dict = dataclasses.field(default_factory=dict)
    model: dict = dataclasses.field(default_factory=dict)

    def materialize(self) -> None:
        """Read mapped codes into memory (Plan.load(mapped=True)), for users that may write into them."""
        for group in self.groups:
            for lin in group.linears:
                lin.codes = lin.codes.clone()

    def save(self, folder: Path, overwrite: bool = False) -> None:
        """Write plan.json + plan.safetensors + manifest.json into a new folder, atomically."""
        with atomic_path(Path(folder), overwrite) as tmp:
            tmp.mkdir()
            self.write_into(tmp)

    def write_into(self, folder: Path) -> None:
        """Write the plan's files, then manifest.json hashing every file in `folder` (the caller owns atomicity).

        Last into its folder: files written after it (a report) would be outside the manifest.
        """
        self.write_files(folder)
        manifest.write(folder, manifest.PLAN_KIND, manifest.model_facts(self))

    def write_files(self, folder: Path) -> None:
        """plan.json + plan.safetensors alone, for a folder whose own manifest covers them (api/onnx_in.py)."""
        schema, tensors = self._flatten()
        write_safetensors(Path(folder) / PLAN_TENSORS, tensors)  # a tensor at a time: codes may be mapped
        (Path(folder) / PLAN_JSON).write_text(json.dumps(schema, indent=2) + "\n")

    def _flatten(self) -> tuple[dict, dict[str, torch.Tensor]]:
        tensors: dict[str, torch.Tensor] = {}
        groups = []
        for g_index, group in enumerate(self.groups):
            for key, value in group.tensors.items():
                tensors[f"g{g_index}.{key}"] = value.contiguous()
            for l_index, lin in enumerate(group.linears):
                for field in ("codes", "scale", "zero", "bias"):
                    value = getattr(lin, field)
                    if value is not None:
                        tensors[f"g{g_index}.w{l_index}.{field}"] = value.contiguous()
            groups.append({"name": group.name, "in_features": group.in_features, "transform": group.transform,
                           "weight_spec": group.weight_spec.to_dict(), "linears": [lin.name for lin in group.linears]})
        schema = {"plan_version": PLAN_VERSION, "method": self.method, "bits": self.bits,
                  "act_spec": None if self.act_spec is None else self.act_spec.to_dict(),
                  "token_types": self.token_types, "groups": groups, "info": self.info}
        return schema, tensors

    @classmethod
    def load(cls, folder: Path, mapped: bool = False) -> Plan:
        """Verify the plan's files against their manifest, then load; UserError naming what differs.

        A plan folder holds its own manifest.json; the plan/ of a rewritten folder is covered by
        the folder's manifest, one level up. mapped: the weights' codes stay in the file, mapped
        (freeact_export.mapped: a big model's plan, used one layer at a time).
        """
        folder = Path(folder)
        root, kind = _manifest_home(folder)
        recorded = manifest.read(root, kind)
        prefix = "" if root == folder else f"{folder.name}/"
        manifest.verify(root, recorded, kind, [prefix + PLAN_JSON, prefix + PLAN_TENSORS])
        plan = cls._read(folder, mapped)
        plan.model = {k: recorded["model"].get(k) for k in ("architecture", "num_layers")}
        manifest.check_plan_facts(root, recorded, kind, plan)
        return plan

    @classmethod
    def _read(cls, folder: Path, mapped: bool = False) -> Plan:
        schema = json.loads((folder / PLAN_JSON).read_text())
        if schema.get("plan_version") != PLAN_VERSION:
            raise ValueError(f"plan version {schema.get('plan_version')} is not {PLAN_VERSION}")
        if mapped:
            codes = {f"g{g}.w{i}.codes" for g, group in enumerate(schema["groups"])
                     for i in range(len(group["linears"]))}
            tensors = read_safetensors(folder / PLAN_TENSORS, mapped=codes)
        else:
            tensors = load_file(folder / PLAN_TENSORS)
        groups = []
        for g_index, g in enumerate(schema["groups"]):
            own = {k: v for k, v in tensors.items() if k.startswith(f"g{g_index}.")}
            group_tensors = {k.split(".", 1)[1]: v for k, v in own.items() if k.split(".")[1] in GROUP_TENSORS}
            linears = [LinearPlan(name, **{f: own.get(f"g{g_index}.w{i}.{f}") for f in ("codes", "scale", "zero",
                                                                                          "bias")})
                       for i, name in enumerate(g["linears"])]
            groups.append(GroupPlan(g["name"], g["in_features"], g["transform"], group_tensors, linears,
                                    QuantSpec.from_dict(g["weight_spec"])))
        act = schema["act_spec"]
        return cls(schema["method"], schema["bits"],
                   None if act is None else QuantSpec.from_dict(act), schema["token_types"], groups, schema["info"])


def _manifest_home(folder: Path) -> tuple[Path, str]:
    """(the folder whose manifest.json covers this plan, its kind)."""
    if (folder / manifest.MANIFEST).is_file():
        return folder, manifest.PLAN_KIND
    parent = folder.parent
    if folder.name == "plan" and ((parent / manifest.MANIFEST).is_file() or (parent / "plugin.onnx").is_file()):
        return parent, manifest.REWRITTEN_KIND  # the plan/ of a rewritten folder (rewrite/folder.py)
    return folder, manifest.PLAN_KIND
