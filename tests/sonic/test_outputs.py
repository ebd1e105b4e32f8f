"""Final outputs of `sonic run`: -o/--keep DIR for every executor, or a preview without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sonic.errors import UserInputError
from sonic.outputs import OutputTarget, check_output_dir, describe, output_target


def test_output_dir_must_be_new_or_empty(tmp_path: Path) -> None:
    assert check_output_dir(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("old")
    with pytest.raises(UserInputError, match="is not empty"):
        check_output_dir(tmp_path / "full")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserInputError, match="is a file"):
        check_output_dir(tmp_path / "file")


def test_temporary_target_is_removed(tmp_path: Path) -> None:
    with output_target(None) as target:
        assert not target.kept and target.directory.is_dir()
    assert not target.directory.exists()
    with output_target(tmp_path / "kept") as target:
        assert target.kept
    assert (tmp_path / "kept").is_dir()


def test_small_outputs_are_shown_big_ones_are_not(tmp_path: Path) -> None:
    small = tmp_path / "total" / "0" / "total"
    small.parent.mkdir(parents=True)
    small.write_text("42\n")
    assert describe([str(small)], OutputTarget(tmp_path, False)) == ["outputs:", "  total/0/total: 42"]
    big = tmp_path / "total" / "0" / "big"
    big.write_bytes(b"x" * 1000)
    assert describe([str(small), str(big)], OutputTarget(tmp_path, False)) == [
        "outputs: 2 file(s), 1003 B, not kept; pass -o DIR to keep them"]
    assert describe([str(small)], OutputTarget(tmp_path, True))[0].endswith(f"in {tmp_path}")
