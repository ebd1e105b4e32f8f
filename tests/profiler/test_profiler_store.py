"""ProfileStore: append-only parts, concatenated reads, clear errors for corrupt files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from profiler import COLUMNS, CorruptProfileError, ProfileStore, record_run, run_to_frame
from profiler.synthetic import CHAIN, chain_behaviour, simulate_run
from sonic.errors import UserInputError


def _frame(size: int = 1_000_000) -> pd.DataFrame:
    return run_to_frame(simulate_run(CHAIN, chain_behaviour(), size), size=size)


def test_append_writes_a_new_part_each_time_and_load_concatenates(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    first = store.append("chain", _frame(1_000_000))
    second = store.append("chain", _frame(2_000_000))
    assert first != second and first.exists() and second.exists()
    assert first.parent == tmp_path / "profiles" / "chain"
    assert first.name.startswith("part-") and first.suffix == ".parquet"
    frame = store.load("chain")
    assert len(frame) == len(_frame(1_000_000)) + len(_frame(2_000_000))
    assert set(frame["size"].dropna().astype(int)) == {1_000_000, 2_000_000}
    assert not list((tmp_path / "profiles" / "chain").glob(".*tmp"))  # no leftovers


def test_load_of_unknown_app_is_empty_with_schema(tmp_path: Path) -> None:
    frame = ProfileStore(tmp_path).load("nothing")
    assert frame.empty and set(COLUMNS) <= set(frame.columns)


def test_append_rejects_rows_without_the_schema(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="run_to_frame"):
        ProfileStore(tmp_path).append("chain", pd.DataFrame({"x": [1]}))


def test_corrupt_part_is_named_in_a_user_error(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    store.append("chain", _frame())
    bad = store.app_dir("chain") / "part-29990101T000000.000000Z-bad.parquet"
    bad.write_bytes(b"this is not parquet")
    with pytest.raises(CorruptProfileError, match=str(bad)) as info:
        store.load("chain")
    assert isinstance(info.value, UserInputError)
    assert "sonic profile" in str(info.value)


def test_part_without_required_columns_is_rejected(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    folder = store.app_dir("chain")
    folder.mkdir(parents=True)
    odd = folder / "part-20000101T000000.000000Z-odd.parquet"
    pd.DataFrame({"stage": ["a"], "wall_s": [1.0]}).to_parquet(odd)
    with pytest.raises(CorruptProfileError, match="lacks columns"):
        store.load("chain")


def test_record_run_appends_without_a_size(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    result = simulate_run(CHAIN, chain_behaviour(), 300_000)
    path = record_run(result, store)
    frame = store.load("chain")
    assert path.exists() and len(frame) == len(result.instances)
    assert frame["size"].isna().all() and (frame["source"] == "reference").all()
    fanout = frame.groupby("stage")["instances"].first().to_dict()
    assert fanout == {"split": 1, "work": 5, "merge": 1}
    result.strategy = "sonic"  # a cluster run
    record_run(result, store)
    assert set(store.load("chain")["source"]) == {"reference", "cluster"}
