"""The job journal: records survive as written, a line torn by a crash is ignored (with all
after it), and replaying it into a fresh scheduler leaves only unfinished instances to run."""

from __future__ import annotations

from pathlib import Path

import pytest

from sonic.app import load_app
from sonic.plan import PassingMethod, fixed_plan
from sonic.routing import ObjectRef
from sonic.runtime.journal import Journal, JournalError, JournalHeader, replay
from sonic.runtime.scheduler import Dispatch, InstanceFinished, JobState

JOB = "0123456789abcdef"
VMS = {"vm0": 2, "vm1": 2}


def header() -> JournalHeader:
    app = load_app("sort")
    return JournalHeader(JOB, "sort", "sort", {"_input/0/in": "c0"},
                         fixed_plan(app, PassingMethod.DIRECT, list(VMS)).to_json())


def finished(stage: str, index: int, vm: str, names: list[str]) -> InstanceFinished:
    return InstanceFinished(stage, index, vm, tuple((n, 10, f"sum-{stage}-{index}-{n}") for n in names), False)


def test_records_round_trip_and_a_torn_line_is_ignored(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "jobs", JOB).create(header())
    first = finished("split", 0, "vm0", ["chunk-0000-of-0002", "chunk-0001-of-0002"])
    second = finished("map", 0, "vm1", ["part-0000", "part-0001"])
    journal.record(first)
    journal.record(second)
    journal.close()
    with open(journal.path, "a") as fh:
        fh.write('{"sum": "00", "doc": {"kind": "done", "stage": "map", "ind')   # the crash, mid-write
    head, done = Journal(tmp_path / "jobs", JOB).read()
    assert head.job == JOB and head.inputs == {"_input/0/in": "c0"}
    assert done == [first, second]


def test_an_altered_line_ends_the_journal_there(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "jobs", JOB).create(header())
    journal.record(finished("split", 0, "vm0", ["chunk-0000-of-0001"]))
    journal.close()
    lines = journal.path.read_text().splitlines()
    lines[-1] = lines[-1].replace('"vm0"', '"vm1"')   # someone edits where an instance ran
    journal.path.write_text("\n".join(lines) + "\n")
    assert Journal(tmp_path / "jobs", JOB).read()[1] == []


def test_no_journal_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no journal of job"):
        Journal(tmp_path / "jobs", JOB).read()


def test_replay_dispatches_only_unfinished_instances(tmp_path: Path) -> None:
    app = load_app("sort")
    plan = fixed_plan(app, PassingMethod.DIRECT, list(VMS))
    refs = [ObjectRef("_input", 0, "in", 1000, "c0")]
    parts = ["part-0000", "part-0001"]
    done = [finished("split", 0, "vm1", ["chunk-0000-of-0002", "chunk-0001-of-0002"]),
            finished("map", 1, "vm0", parts)]
    state = JobState(app, plan, VMS, refs)
    actions, taken = replay(state, done)
    assert taken == 2
    dispatched = [(a.spec.stage, a.spec.index) for a in actions if isinstance(a, Dispatch)]
    assert dispatched == [("map", 0)], dispatched
    assert sum(state.running.values()) == 1   # the slot accounting matches what really runs


def test_packed_outputs_keep_their_ranges_through_the_journal(tmp_path: Path) -> None:
    """A packed producer's partitions (issue 12) are journaled with the pack and offset that
    hold them, so a resumed job's consumers still fetch the right range."""
    journal = Journal(tmp_path / "jobs", JOB).create(header())
    packed = InstanceFinished("map", 1, "vm0", (("part-0000", 300, "s0"), ("part-0001", 200, "s1")), True,
                              ranges={"part-0000": ("_packed", 0), "part-0001": ("_packed", 300)})
    journal.record(packed)
    journal.close()
    _, done = Journal(tmp_path / "jobs", JOB).read()
    assert done == [packed]
