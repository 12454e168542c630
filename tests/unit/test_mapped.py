"""Mapped tensors (freeact_export/mapped.py): the values survive spilling, writing and reading back, and a
released tensor's pages leave the process's resident memory."""

import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file

from freeact_export.mapped import read_safetensors, release, spill, write_safetensors


def _tensors():
    gen = torch.Generator().manual_seed(0)
    return {"g0.w0.codes": torch.randint(-8, 8, (33, 70), dtype=torch.int8, generator=gen),
            "g0.w0.scale": torch.rand(33, 1, generator=gen), "g0.smooth": torch.rand(70, generator=gen).double(),
            "g1.w0.codes": torch.randint(0, 16, (5, 3), dtype=torch.uint8, generator=gen),
            "g1.kron": torch.rand(4, 4, generator=gen).to(torch.bfloat16), "g1.empty": torch.zeros(0, 4)}


def test_spilled_tensors_keep_their_values_and_are_read_only_views(tmp_path):
    tensors = list(_tensors().values())
    mapped = spill(tensors, tmp_path / "layer.codes")
    for a, b in zip(tensors, mapped, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    release(mapped)  # the pages go back; the values are read again from the file
    assert all(torch.equal(a, b) for a, b in zip(tensors, mapped, strict=True))


def test_written_files_are_safetensors_and_read_back_mapped(tmp_path):
    tensors = _tensors()
    write_safetensors(tmp_path / "ours.safetensors", tensors)
    theirs = load_file(tmp_path / "ours.safetensors")  # the safetensors package reads our file
    assert theirs.keys() == tensors.keys() and all(torch.equal(theirs[k], tensors[k]) for k in tensors)
    save_file(tensors, tmp_path / "theirs.safetensors")  # and we read its files
    for path in (tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"):
        back = read_safetensors(path, mapped={"g0.w0.codes"})
        assert all(torch.equal(back[k], tensors[k]) and back[k].dtype == tensors[k].dtype for k in tensors)


def test_released_pages_leave_the_resident_memory(tmp_path):
    """200 MB of codes spilled and read once are resident; released, the process's RSS drops by about that."""
    code = f"""
import torch
from freeact_export.mapped import release, spill
def rss():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) / 1024
codes = spill([torch.ones(200 * 2**20, dtype=torch.int8)], __import__('pathlib').Path({str(tmp_path / 'big.codes')!r}))
before = rss()
assert int(codes[0].sum()) == 200 * 2**20  # reads every page
touched = rss()
release(codes)
print(touched - before, touched - rss())
"""
    grown, dropped = map(float, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                               check=True).stdout.split())
    assert grown > 150 and dropped > 150
