import pytest

from freeact_export.errors import UserError
from freeact_export.files import atomic_path


def test_success_renames_into_place(tmp_path):
    target = tmp_path / "out"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("a")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("user's file")
    with pytest.raises(UserError, match="already exists"):
        with atomic_path(target):
            pass
    assert target.read_text() == "user's file"
    with atomic_path(target, overwrite=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_missing_parent_folder_is_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        with atomic_path(tmp_path / "no" / "out.json"):
            pass
