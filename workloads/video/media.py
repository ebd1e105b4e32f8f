"""Small I/O helpers for the video workload: MJPG/AVI writing, frame reading, deterministic npz.

Videos are written with OpenCV's built-in MJPEG encoder in an AVI container
(``cv2.CAP_OPENCV_MJPEG``): it does not depend on the FFmpeg build, its output is a pure
function of the frames (no timestamps), and every frame is a keyframe, so chunks can be cut
at any frame. OpenCV picks the container from the file extension, so writers always target
a ``.avi`` temp path that callers rename to the final (extension-less) name.
"""

from __future__ import annotations

import contextlib
import functools
import io
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import ParamSpec, TypeVar

import cv2
import numpy as np

from sonic.errors import InputFormatError

FOURCC = cv2.VideoWriter.fourcc(*"MJPG")

_P = ParamSpec("_P")
_R = TypeVar("_R")


@contextlib.contextmanager
def serial_opencv() -> Iterator[None]:
    """Run OpenCV single-threaded inside the block and leave no pool threads behind.

    OpenCV's pthreads pool is not fork-safe: its workers spin for a while after each job,
    and a ``fork()`` in that window copies a locked worker mutex into the child, whose first
    parallel OpenCV call then blocks forever (reproduced: ~4% of forks right after an MJPG
    encode hung). The reference executor forks one child per instance, and tests generate
    inputs in the executor's process, so every entry point of this workload runs OpenCV
    serially: ``setNumThreads(1)`` joins the workers, and restoring the old count afterwards
    does not restart them until someone else runs a parallel OpenCV call. One thread per
    instance is also the intended shape: instances are the unit of parallelism.
    """
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def opencv_serial(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorator form of :func:`serial_opencv` (keeps the name and signature of ``fn``)."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with serial_opencv():
            return fn(*args, **kwargs)

    return wrapper


def open_writer(path: Path, width: int, height: int, fps: float) -> cv2.VideoWriter:
    """An opened MJPG writer for ``path`` (which must end in ``.avi``)."""
    if path.suffix != ".avi":
        raise ValueError(f"video writer path {path} must end in .avi (OpenCV picks the container by extension)")
    writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, FOURCC, fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"cannot open an MJPG video writer for {path} ({width}x{height} @ {fps} fps)")
    return writer


#: Leading bytes of the video containers this workload reads (AVI, MP4/MOV, Matroska/WebM,
#: MPEG-TS). FFmpeg also "decodes" plain text as video (its tty demuxer renders it as ANSI
#: art), so without this check a text file passes as a video of hundreds of frames.
_CONTAINERS: tuple[tuple[int, bytes], ...] = ((0, b"RIFF"), (4, b"ftyp"), (0, b"\x1a\x45\xdf\xa3"), (0, b"\x47"))


def check_container(path: Path) -> None:
    """Raise :class:`InputFormatError` unless ``path`` starts like a video container."""
    if path.is_dir():
        return  # a chunk directory is never an app input; OpenCV reports it below
    with open(path, "rb") as fh:
        head = fh.read(12)
    if not any(head[at:at + len(magic)] == magic for at, magic in _CONTAINERS):
        raise InputFormatError(
            f"{path.name} is not a video file (AVI, MP4/MOV, MKV/WebM or MPEG-TS expected, it starts with "
            f"{head[:8]!r}); generate one with `sonic workloads gen video --size 16MB -o in.avi`")


def open_capture(path: Path) -> cv2.VideoCapture:
    """An opened reader for ``path``; raises a clear error if OpenCV cannot decode it."""
    check_container(Path(path))
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path} is not a video OpenCV can read; generate one with `sonic workloads gen video`")
    return cap


def iter_frames(path: Path) -> Iterator[np.ndarray]:
    """Decoded BGR frames of ``path`` in order."""
    cap = open_capture(path)
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame
    finally:
        cap.release()


def first_frame(path: Path) -> np.ndarray | None:
    cap = open_capture(path)
    try:
        ok, frame = cap.read()
    finally:
        cap.release()
    return frame if ok else None


def frame_count(path: Path) -> int:
    """Number of frames of ``path``: the container's count, or a full count if it has none."""
    cap = open_capture(path)
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if count > 0:
            return count
        # Containers without an index (or a broken one) report 0 / -1: count by demuxing.
        count = 0
        while cap.grab():
            count += 1
        return count
    finally:
        cap.release()


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Like ``np.savez`` but byte-for-byte deterministic.

    ``np.savez`` stamps each zip member with the current time, so identical data would give
    different files; a fixed timestamp keeps outputs reproducible (determinism is tested).
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, buf.getvalue())
