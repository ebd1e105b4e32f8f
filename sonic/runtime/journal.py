"""The job journal: what a coordinator must remember to finish a job after it crashed.

One JSON line per record, appended and fsync'd: a header (job id, app, input checksums, the
plan) then one line per finished instance (stage, index, VM, outputs with size and
checksum, whether they went to S3). Every line carries an xxh3 checksum of itself, so a line
torn by a crash mid-write is recognised and ignored (as are any after it).

``sonic run APP --input X --resume JOB`` reads it back: the scheduler is replayed to the
state "these instances are done, their outputs are on these VMs", and only the rest runs.
Objects named by the journal are still verified by checksum where they are consumed; one
that is gone or damaged is regenerated from its producer like any lost object. Resuming
works while the job's lease is live on the agents (``Timeouts.lease_s`` after the crash);
after that they have dropped its data and the run must start afresh.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

from sonic.app import App
from sonic.errors import UserInputError
from sonic.plan import Plan
from sonic.runtime.objects import check_job
from sonic.runtime.scheduler import Action, Dispatch, InstanceFinished, JobState

VERSION = 1


class JournalError(UserInputError):
    """A job cannot be resumed (no journal, a different app or input, expired lease)."""


def _line(doc: dict[str, Any]) -> str:
    body = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return json.dumps({"sum": xxhash.xxh3_64_hexdigest(body.encode()), "doc": doc}, sort_keys=True, separators=(",", ":"))


def _parse(line: str) -> dict[str, Any] | None:
    try:
        wrapper = json.loads(line)
        doc = wrapper["doc"]
        body = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        if wrapper["sum"] != xxhash.xxh3_64_hexdigest(body.encode()) or not isinstance(doc, dict):
            return None
        return doc
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


@dataclass
class JournalHeader:
    job: str
    app: str
    app_spec: str
    inputs: dict[str, str]       # input key -> checksum
    plan: dict[str, Any]

    def plan_object(self, app: App, vm_names: list[str]) -> Plan:
        """The plan the job ran, checked against the app and cluster of the resuming run."""
        return Plan.from_json(self.plan, source=f"journal of job {self.job}").check(app, vm_names)


class Journal:
    """Append-only journal of one job at ``directory/JOB.jsonl``."""

    def __init__(self, directory: Path, job: str) -> None:
        self.path = Path(directory) / f"{check_job(job)}.jsonl"
        self._fh: Any = None
        self._made: list[Path] = []   # directories create() made, removed again if left empty

    def create(self, header: JournalHeader) -> Journal:
        for _ in range(10):
            missing = [d for d in [self.path.parent, *self.path.parent.parents] if not d.exists()]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._made = missing  # innermost first
            try:
                self._fh = open(self.path, "a", encoding="utf-8")
                break
            except FileNotFoundError:
                continue  # a concurrent run removed the (then empty) directory in between: again
        else:
            raise JournalError(f"cannot create the journal {self.path}: its directory keeps disappearing")
        if self.path.stat().st_size == 0:
            self._append({"kind": "header", "version": VERSION, "job": header.job, "app": header.app,
                          "app_spec": header.app_spec, "inputs": header.inputs, "plan": header.plan})
        return self

    def _append(self, doc: dict[str, Any]) -> None:
        self._fh.write(_line(doc) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def record(self, event: InstanceFinished) -> None:
        self._append({"kind": "done", "stage": event.stage, "index": event.index, "vm": event.vm,
                      "outputs": [list(o) for o in event.outputs], "uploaded": event.uploaded,
                      "ranges": {name: list(at) for name, at in event.ranges.items()}})

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        for directory in self._made:
            try:
                directory.rmdir()
            except OSError:
                break  # not empty (another job's journal, the models): keep it and its parents

    def read(self) -> tuple[JournalHeader, list[InstanceFinished]]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise JournalError(f"no journal of job {self.path.stem} in {self.path.parent}; only a job whose "
                               "coordinator crashed can be resumed (run it again without --resume)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise JournalError(f"cannot read the journal {self.path}: {exc}") from None
        docs: list[dict[str, Any]] = []
        for line in lines:
            doc = _parse(line)
            if doc is None:
                break  # torn by the crash: this line and anything after it never happened
            docs.append(doc)
        if not docs or docs[0].get("kind") != "header" or docs[0].get("version") != VERSION:
            raise JournalError(f"journal {self.path} has no valid header; run the job again without --resume")
        head = docs[0]
        header = JournalHeader(str(head["job"]), str(head["app"]), str(head["app_spec"]), dict(head["inputs"]),
                               dict(head["plan"]))
        done = [InstanceFinished(str(d["stage"]), int(d["index"]), str(d["vm"]),
                                 tuple((str(n), int(s), str(c)) for n, s, c in d["outputs"]), bool(d["uploaded"]),
                                 ranges={str(n): (str(at[0]), int(at[1])) for n, at in (d.get("ranges") or {}).items()})
                for d in docs[1:] if d.get("kind") == "done"]
        return header, done


def replay(state: JobState, done: list[InstanceFinished]) -> tuple[list[Action], int]:
    """Bring a fresh ``state`` to "these instances finished"; return the actions still to carry
    out and how many journaled instances were taken as done."""
    pending: list[Action] = list(state.start())
    taken = 0
    for event in done:
        instances = state.instances.get(event.stage)
        if instances is None or not 0 <= event.index < len(instances) or event.vm not in state.alive:
            continue  # its stage was not reached, or its VM is gone: the instance runs again
        inst = instances[event.index]
        if inst.done:
            continue
        if inst.running_on is not None and inst.running_on != event.vm:
            # start() dispatched it to another VM; it really finished where the journal says.
            state.running[inst.running_on] -= 1
            state.running[event.vm] += 1
            inst.running_on = event.vm
        pending.extend(state.handle(event))
        taken += 1
    live = []
    for action in pending:
        if isinstance(action, Dispatch):
            inst = state.instances[action.spec.stage][action.spec.index]
            if inst.done or inst.running_on != action.vm:
                continue  # finished according to the journal
        live.append(action)
    return live, taken
