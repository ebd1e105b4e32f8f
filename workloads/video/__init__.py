"""The ``video`` workload: split a video into chunks, sample frames, classify them, summarise.

Stages (``APP``)::

    split (1) --scatter--> extract (1 per chunk) --one-to-one--> classify --gather--> summarise (1)

* ``split`` decodes the input video and re-encodes it as MJPG/AVI chunks of
  :data:`FRAMES_PER_CHUNK` frames, written as outputs ``chunk-00000``, ``chunk-00001``, ...
  (zero-padded: name order is time order). The fanout therefore grows with video length.
* ``extract`` decodes one chunk and keeps every :data:`STRIDE`-th frame of the *whole* video
  (global index ``chunk * FRAMES_PER_CHUNK + i``), cropped to the scene and downscaled, in
  ``frames-<chunk>.npz`` (arrays ``frames``, ``indices``, ``chunk``, ``decoded``).
* ``classify`` computes shape features of every kept frame and labels it with a small
  scikit-learn random forest (see :mod:`workloads.video.model`; trained offline once and
  cached), writing ``labels-<chunk>.json``.
* ``summarise`` joins the chunks in order into ``summary.json``: ``frames`` (global indices),
  ``labels`` (one per kept frame, same order), ``counts`` per class, plus the chunk count
  and the number of decoded frames.

Input (``generate_input``): one MJPG/AVI file, 320x240 at 24 fps, of synthetic scenes
(:mod:`workloads.video.scene`): runs of 12-48 frames showing either an empty noisy
background or a moving coloured circle, square or triangle. Its length is chosen by writing
frames until the file reaches the requested size, so frames, chunks and all intermediate
sizes grow with the input size.

Ground truth: the class of frame ``i`` is a pure function of a 32-bit video seed and ``i``
(:func:`workloads.video.scene.class_schedule`). The video seed is drawn into every frame as a
strip of black/white cells (32 seed bits + 8 check bits) in the bottom 16 rows, below the
scene the classifier sees. The validator decodes the strip from the first frame and
recomputes the expected labels, so the input stays a single self-describing file with no
sidecar and no reliance on its name. Videos without a valid strip are still checked
structurally; only the accuracy check is skipped (and the detail says so).

OpenCV runs single-threaded in every entry point (stages, generator, validator, features;
see :func:`workloads.video.media.serial_opencv`): its thread pool is not fork-safe, and the
reference executor forks one child per instance.

The validator (``validate_output``) checks that the summary has exactly one label per kept
frame (indices ``0, STRIDE, 2*STRIDE, ...`` up to the frame count OpenCV reports for the
input), that every label is a known class, that the counts match the labels, and that
accuracy against the ground truth is at least :data:`MIN_ACCURACY`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np

import sonic
from workloads.video import media, model, scene

APP = sonic.App("video")

#: Frames per chunk (5 s at 24 fps): 3 chunks for 8 MB of input, 17 for 64 MB.
FRAMES_PER_CHUNK = 120
#: Keep every STRIDE-th frame of the video for classification.
STRIDE = 2
#: Validator floor on label accuracy against the recomputed ground truth.
MIN_ACCURACY = 0.8
#: Bytes the AVI index adds per frame when the writer is released (``idx1`` entry).
_INDEX_BYTES_PER_FRAME = 16
_CHUNK_RE = re.compile(r"(\d+)")
SUMMARY_NAME = "summary.json"


def chunk_name(index: int) -> str:
    return f"chunk-{index:05d}"


def _chunk_index(name: str) -> int:
    """Chunk number from a name like ``chunk-00012`` / ``frames-00012.npz``."""
    match = _CHUNK_RE.search(name)
    if match is None:
        raise ValueError(f"cannot tell the chunk number from file name {name!r}; expected e.g. chunk-00012")
    return int(match.group(1))


def _single_input(ctx: sonic.Context) -> Path:
    if len(ctx.inputs) != 1:
        names = ", ".join(p.name for p in ctx.inputs) or "none"
        raise ValueError(f"stage {ctx.stage!r} expects exactly one input file, got {len(ctx.inputs)} ({names})")
    return ctx.inputs[0]


# ---------------------------------------------------------------------------------- stages
@APP.stage()
@media.opencv_serial
def split(ctx: sonic.Context) -> None:
    """Re-encode the input video as fixed-length chunks, one output file per chunk."""
    source = _single_input(ctx)
    cap = media.open_capture(source)
    fps = cap.get(cv2.CAP_PROP_FPS) or scene.FPS
    writer: cv2.VideoWriter | None = None
    tmp = ctx.scratch_dir / "chunk.avi"
    chunk = 0
    in_chunk = 0
    total = 0

    def finish() -> None:
        nonlocal writer, chunk, in_chunk
        assert writer is not None
        writer.release()
        writer = None
        # The writer needs a .avi name; the output keeps the plain chunk name.
        shutil.move(tmp, ctx.output(chunk_name(chunk)))
        chunk += 1
        in_chunk = 0

    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if writer is None:
                height, width = frame.shape[:2]
                writer = media.open_writer(tmp, width, height, fps)
            writer.write(frame)
            in_chunk += 1
            total += 1
            if in_chunk == FRAMES_PER_CHUNK:
                finish()
        if writer is not None:
            finish()
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if total == 0:
        raise ValueError(f"input video {source.name} has no decodable frames")


@APP.stage(after="split", pattern="scatter")
@media.opencv_serial
def extract(ctx: sonic.Context) -> None:
    """Decode one chunk; keep every STRIDE-th frame of the video, cropped and downscaled."""
    source = _single_input(ctx)
    chunk = _chunk_index(ctx.key or source.name)
    first = chunk * FRAMES_PER_CHUNK
    kept: list[np.ndarray] = []
    indices: list[int] = []
    decoded = 0
    for i, frame in enumerate(media.iter_frames(source)):
        decoded += 1
        if (first + i) % STRIDE == 0:
            kept.append(scene.prepare_frame(frame))
            indices.append(first + i)
    width, height = scene.SMALL_SIZE
    frames = np.stack(kept) if kept else np.zeros((0, height, width, 3), dtype=np.uint8)
    media.write_npz(
        ctx.output(f"frames-{chunk:05d}.npz"),
        {
            "frames": frames,
            "indices": np.array(indices, dtype=np.int64),
            "chunk": np.array(chunk, dtype=np.int64),
            "decoded": np.array(decoded, dtype=np.int64),
        },
    )


@APP.stage(after="extract", pattern="one-to-one")
@media.opencv_serial
def classify(ctx: sonic.Context) -> None:
    """Label every kept frame of one chunk with the cached random forest."""
    source = _single_input(ctx)
    with np.load(source, allow_pickle=False) as data:
        frames = data["frames"]
        indices = data["indices"]
        chunk = int(data["chunk"])
        decoded = int(data["decoded"])
    if len(frames):
        predicted = model.classifier().predict(model.features_of(frames))
        labels = [scene.CLASSES[int(p)] for p in predicted]
    else:
        labels = []
    doc = {"chunk": chunk, "decoded": decoded, "frames": [int(i) for i in indices], "labels": labels}
    ctx.output(f"labels-{chunk:05d}.json").write_text(json.dumps(doc, sort_keys=True))


@APP.stage(after="classify", pattern="gather")
def summarise(ctx: sonic.Context) -> None:
    """Join per-chunk labels in time order into one summary with per-class counts."""
    docs = [json.loads(p.read_text()) for p in ctx.inputs]
    docs.sort(key=lambda d: d["chunk"])
    frames: list[int] = [i for d in docs for i in d["frames"]]
    labels: list[str] = [label for d in docs for label in d["labels"]]
    counts = Counter(labels)
    summary: dict[str, Any] = {
        "app": "video",
        "chunks": len(docs),
        "frames_per_chunk": FRAMES_PER_CHUNK,
        "stride": STRIDE,
        "decoded_frames": sum(int(d["decoded"]) for d in docs),
        "frames": frames,
        "labels": labels,
        "counts": {name: counts.get(name, 0) for name in scene.CLASSES},
    }
    ctx.output(SUMMARY_NAME).write_text(json.dumps(summary, sort_keys=True))


# ---------------------------------------------------------------------------------- input
@APP.generate_input
@media.opencv_serial
def generate(path: Path, size_bytes: int, seed: int) -> None:
    """Write one MJPG/AVI video of synthetic scenes at ``path``, about ``size_bytes`` long."""
    if size_bytes <= 0:
        raise ValueError(f"video size must be positive, got {size_bytes} bytes")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    vseed = scene.video_seed(seed)
    noise = scene.noise_bank(vseed)
    pick = np.random.default_rng([vseed, 3])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.avi")
    writer = media.open_writer(tmp, scene.WIDTH, scene.HEIGHT, scene.FPS)
    frames = 0
    try:
        done = False
        for segment in scene.iter_segments(vseed):
            background = scene.segment_background(segment)
            for offset in range(segment.length):
                frame = scene.render_frame(segment, offset, background, noise[int(pick.integers(len(noise)))], vseed)
                writer.write(frame)
                frames += 1
                # The writer flushes in small blocks, so the size on disk tracks the bytes
                # written closely; stop once it plus the index (written on release) and half
                # a frame (to round to the nearest frame) reaches the target.
                written = tmp.stat().st_size
                per_frame = written / frames
                if written + frames * _INDEX_BYTES_PER_FRAME + per_frame / 2 >= size_bytes:
                    done = True
                    break
            if done:
                break
        writer.release()
        os.replace(tmp, path)
    except BaseException:
        writer.release()
        tmp.unlink(missing_ok=True)
        raise


@APP.input_features
@media.opencv_serial
def features(input_path: Path) -> dict[str, float]:
    """Cheap container-level features: no frame is decoded."""
    input_path = Path(input_path)
    cap = media.open_capture(input_path)
    try:
        frames = float(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        width = float(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = float(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    size = float(input_path.stat().st_size)
    duration = frames / fps if fps > 0 else 0.0
    return {
        "bytes": size,
        "frames": frames,
        "fps": fps,
        "width": width,
        "height": height,
        "duration_s": duration,
        "bitrate_bps": size * 8.0 / duration if duration > 0 else 0.0,
        "chunks": float(-(-int(frames) // FRAMES_PER_CHUNK)),
        "kept_frames": float(-(-int(frames) // STRIDE)),
    }


# ---------------------------------------------------------------------------------- output
@APP.validate_output
@media.opencv_serial
def validate(input_path: Path, outputs: list[Path]) -> sonic.Validation:
    """Check one label per kept frame, valid labels, matching counts and accuracy."""
    candidates = [Path(p) for p in outputs if Path(p).name == SUMMARY_NAME] or [Path(p) for p in outputs]
    if len(candidates) != 1:
        return sonic.Validation(False, f"expected one {SUMMARY_NAME} output, got {len(outputs)} files")
    try:
        summary = json.loads(candidates[0].read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return sonic.Validation(False, f"cannot read summary {candidates[0].name}: {exc}")
    if not isinstance(summary, dict):
        return sonic.Validation(False, "summary is not a JSON object")
    frames = summary.get("frames")
    labels = summary.get("labels")
    counts = summary.get("counts")
    if not isinstance(frames, list) or not isinstance(labels, list) or not isinstance(counts, dict):
        return sonic.Validation(False, "summary lacks 'frames', 'labels' or 'counts'")

    n_frames = media.frame_count(Path(input_path))
    expected = list(range(0, n_frames, STRIDE))
    if len(labels) != len(frames):
        return sonic.Validation(False, f"{len(labels)} labels for {len(frames)} frame indices")
    if frames != expected:
        missing = sorted(set(expected) - set(frames))[:5]
        return sonic.Validation(
            False,
            f"summary labels {len(frames)} frames but the input has {n_frames} frames, i.e. "
            f"{len(expected)} kept at stride {STRIDE} (first missing/misplaced: {missing})",
        )
    if summary.get("decoded_frames") != n_frames:
        return sonic.Validation(
            False, f"pipeline decoded {summary.get('decoded_frames')} frames, the input has {n_frames}"
        )
    unknown = sorted({str(label) for label in labels} - set(scene.CLASSES))
    if unknown:
        return sonic.Validation(False, f"unknown labels {unknown}; classes are {list(scene.CLASSES)}")
    actual = Counter(labels)
    if counts != {name: actual.get(name, 0) for name in scene.CLASSES}:
        return sonic.Validation(False, f"counts {counts} do not match the labels {dict(actual)}")

    head = media.first_frame(Path(input_path))
    vseed = scene.read_seed_strip(head) if head is not None else None
    if vseed is None:
        return sonic.Validation(
            True, f"{len(labels)} labels for {n_frames} frames; no seed strip, accuracy not checked"
        )
    truth = scene.class_schedule(vseed, n_frames)
    correct = sum(1 for i, label in zip(frames, labels) if scene.CLASSES[truth[i]] == label)
    accuracy = correct / len(labels) if labels else 1.0
    detail = (f"{len(labels)} labels for {n_frames} frames (stride {STRIDE}), "
              f"accuracy {accuracy:.3f} (floor {MIN_ACCURACY})")
    return sonic.Validation(accuracy >= MIN_ACCURACY, detail)
