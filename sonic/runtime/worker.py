"""A warm worker: one process per slot and app, the app imported once, instances run in turn.

The agent talks to it over its stdin/stdout with the same framed msgpack as the network
protocol. File descriptor 1 is redirected to stderr (the agent's log) at start, so a stage
function that prints cannot corrupt the channel.

Run as ``python -m sonic.runtime.worker APP_SPEC``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import IO, Any, BinaryIO

import msgspec

from sonic.app import App, load_app
from sonic.errors import SonicError, TransportError, UserInputError
from sonic.execution import format_failure, one_core_per_instance, release_free_memory, run_instance
from sonic.metrics import InstanceMetrics
from sonic.routing import InstanceSpec, ObjectRef
from sonic.runtime.protocol import FRAME_LENGTH, decode_doc, encode_doc, length_prefixed


def write_frame(stream: IO[bytes], doc: dict[str, Any]) -> None:
    """One frame of the network protocol's codec (plain: the pipe needs no MAC)."""
    stream.write(length_prefixed(encode_doc(doc)))
    stream.flush()


def read_frame(stream: IO[bytes]) -> dict[str, Any] | None:
    """The next frame's map, or ``None`` at end of stream (the other side is gone)."""
    head = stream.read(FRAME_LENGTH.size)
    if len(head) < FRAME_LENGTH.size:
        return None
    (length,) = FRAME_LENGTH.unpack(head)
    body = stream.read(length)
    if len(body) < length:
        return None
    return decode_doc(body, "worker pipe", limit=None)


class WorkerInput(msgspec.Struct, frozen=True):
    """One input object of a run request (the agent's ``inputs`` entries, same keys)."""

    stage: str
    instance: int
    name: str
    size: int
    checksum: str = ""


class WorkerRunRequest(msgspec.Struct, frozen=True):
    """The agent's run frame to a warm worker (keys as the agent writes them, see ops.run)."""

    stage: str
    index: int
    num_instances: int
    inputs: list[WorkerInput]
    paths: list[str]
    output_dir: str
    scratch_dir: str
    key: str | None = None
    partitions: dict[str, int] | None = None
    vm: str | None = None


class WorkerRunReply(msgspec.Struct, frozen=True, omit_defaults=True):
    """A warm worker's answer to one run frame: the instance's metrics and the (name, size) of
    every output it wrote, or the failure (``bad_input``: the app input is malformed)."""

    ok: bool
    metrics: InstanceMetrics | None = None
    outputs: list[tuple[str, int]] = []
    error: str = ""
    bad_input: bool = False


def decode_run_reply(doc: dict[str, Any] | None) -> WorkerRunReply:
    """``doc`` as a worker's run reply, or ValueError naming the bad field."""
    try:
        reply = msgspec.convert(doc, WorkerRunReply, strict=True)
    except msgspec.ValidationError as exc:
        raise ValueError(f"malformed worker run reply: {exc}") from None
    if reply.ok and reply.metrics is None:
        raise ValueError("malformed worker run reply: a successful run carries its metrics")
    return reply


def decode_run_request(doc: dict[str, Any]) -> WorkerRunRequest:
    """``doc`` as a run request, or TransportError naming the bad field (``$.inputs[0].size``)."""
    try:
        return msgspec.convert(doc, WorkerRunRequest, strict=True)
    except msgspec.ValidationError as exc:
        raise TransportError(f"agent sent a malformed worker run frame: {exc}") from None


def spec_from_request(req: WorkerRunRequest) -> InstanceSpec:
    refs = tuple(ObjectRef(i.stage, i.instance, i.name, i.size, i.checksum) for i in req.inputs)
    return InstanceSpec(req.stage, req.index, req.num_instances, req.key, refs, dict(req.partitions or {}))


def serve(app_spec: str, channel_in: BinaryIO, channel_out: BinaryIO) -> None:
    try:
        app = load_app(app_spec)
    except SonicError as exc:
        write_frame(channel_out, {"ok": False, "fatal": True, "error": str(exc)})
        return
    with one_core_per_instance():  # after the app's imports: their thread pools are limited too
        _serve_loaded(app, channel_in, channel_out)


def _serve_loaded(app: App, channel_in: BinaryIO, channel_out: BinaryIO) -> None:
    release_free_memory()  # the first full collection (then frozen) is paid while warming, not by an instance
    write_frame(channel_out, {"ok": True, "ready": True, "pid": os.getpid()})
    while (doc := read_frame(channel_in)) is not None:
        try:
            req = decode_run_request(doc)
        except TransportError as exc:  # the agent's bug, not the app's: answer it, stay warm
            write_frame(channel_out, {"ok": False, "error": str(exc)})
            continue
        spec = spec_from_request(req)
        scratch = Path(req.scratch_dir)
        try:
            outcome = run_instance(app, spec, [Path(p) for p in req.paths], Path(req.output_dir), scratch,
                                   vm=req.vm)
            reply = WorkerRunReply(True, outcome.metrics, list(outcome.outputs))
        except UserInputError as exc:  # the app input is malformed: the run stops (exit 2), no retry
            reply = WorkerRunReply(False, error=format_failure(spec, exc), bad_input=True)
        except Exception as exc:  # noqa: BLE001 - user code failed: report it, stay warm
            reply = WorkerRunReply(False, error=format_failure(spec, exc))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        write_frame(channel_out, msgspec.to_builtins(reply))


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m sonic.runtime.worker APP_SPEC")
    channel_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # user prints go to the log, never into the channel
    sys.stdout = sys.stderr
    serve(sys.argv[1], sys.stdin.buffer, channel_out)


if __name__ == "__main__":
    main()
