"""Learned groups saved as they finish, so a long learning run resumes where it stopped.

FreeAct / FlatQuant learn each linear group on its own, from calibration statistics only, so a
group's result depends on nothing but those statistics and the settings. A run of the gpu
preset on a big model takes hours; with a checkpoint folder an interrupted run, started again
with the same settings, recalibrates (deterministic) and learns only the groups still missing.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from freeact_export.errors import UserError
from freeact_export.preflight import writing

SETTINGS_FILE = "settings.json"


class LearnedGroups:
    """A folder of finished groups (tensors, weight clip, learning info) for one set of settings.

    The settings are written once; a folder written for other settings is refused rather than
    mixed in, since its groups would silently belong to another plan. `statistics` (numbers
    that summarise the calibration data) are compared to a relative 1e-4, so float noise in a
    recalibration does not refuse the folder while another model or corpus does.
    """

    def __init__(self, folder: str | Path, settings: dict, statistics: list[float]):
        self.folder = Path(folder)
        if not self.folder.parent.is_dir():
            raise UserError(f"the folder {self.folder.parent} for checkpoint {self.folder} does not exist; "
                            "create it first")
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(f"checkpoint {self.folder} is a file; --checkpoint takes a folder (created when missing)")
        self.folder.mkdir(exist_ok=True)
        path = self.folder / SETTINGS_FILE
        settings = json.loads(json.dumps({**settings, "statistics": statistics}))  # as JSON reads it back
        if path.exists():
            saved = json.loads(path.read_text())
            differ = sorted(k for k in set(saved) | set(settings)
                            if k != "statistics" and saved.get(k) != settings.get(k))
            close = len(saved.get("statistics", [])) == len(statistics) and all(
                math.isclose(a, b, rel_tol=1e-4) for a, b in zip(saved["statistics"], statistics, strict=True))
            if not close:
                differ.append("calibration statistics")
            if differ:
                raise UserError(f"checkpoint {self.folder} holds groups learned with other settings "
                                f"(different {', '.join(differ)}); use another folder or delete it")
        else:
            _write_atomically(path, lambda tmp: tmp.write_text(json.dumps(settings, indent=2) + "\n"))
        # Learning seconds of the groups read back, so a resumed run can report its whole cost (None
        # once a group saved without a time is read); kept out of `info`, which must not depend on
        # when a group was learned.
        self.loaded_learn_s: float | None = 0.0

    def _file(self, index: int) -> Path:
        return self.folder / f"group-{index:04d}.safetensors"

    def load(self, index: int, name: str) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict] | None:
        """Group `index`'s saved (tensors, weight_clip, info), or None when it is not saved yet."""
        path = self._file(index)
        if not path.exists():
            return None
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
            info = json.loads(metadata["info"])
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
        if info.get("group") != name:
            raise UserError(f"checkpoint {path} holds group {info.get('group')}, not {name}; "
                            "use another folder or delete it")
        if "learn_s" not in metadata:
            self.loaded_learn_s = None
        elif self.loaded_learn_s is not None:
            self.loaded_learn_s += float(metadata["learn_s"])
        return tensors, tensors.pop("weight_clip"), info

    def save(self, index: int, tensors: dict[str, torch.Tensor], weight_clip: torch.Tensor, info: dict,
             learn_s: float) -> None:
        payload = {key: value.contiguous() for key, value in {**tensors, "weight_clip": weight_clip}.items()}
        metadata = {"info": json.dumps(info), "learn_s": f"{learn_s:.3f}"}
        _write_atomically(self._file(index), lambda tmp: save_file(payload, str(tmp), metadata=metadata))


def _write_atomically(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    with writing(path):
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:  # a write cut short (a full disk) leaves no half-written group behind
            tmp.unlink(missing_ok=True)
