"""Synthetic scenes for the video workload: the class schedule, the renderer and the seed strip.

A video is a sequence of *segments*. Each segment has one class (``empty``, ``circle``,
``square`` or ``triangle``), a length in frames, a background (base colour plus a gentle
gradient), and for shape classes a coloured shape that moves on a straight line across the
scene. Every frame also gets Gaussian pixel noise, so the codec has real work to do.

Everything is a pure function of a 32-bit *video seed*: :func:`iter_segments` draws segment
after segment from one generator (classes in shuffled rounds of all four), so the class of
frame ``i`` (:func:`class_schedule`) does not depend on how many frames the video has. The
video seed is written into every frame as a black/white block strip along the bottom
:data:`STRIP_H` rows (:func:`draw_seed_strip`); the validator decodes it from the first
frame (:func:`read_seed_strip`) and recomputes the ground truth. The strip is outside the
*scene* (rows ``0 .. SCENE_H``), which is all the classifier ever sees (:func:`prepare_frame`
crops it away).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

#: Frame geometry of generated videos (pixels). Multiples of 16 keep JPEG blocks aligned
#: with the seed strip's cells, so compression cannot smear one bit into the next.
WIDTH = 320
HEIGHT = 240
STRIP_H = 16
SCENE_H = HEIGHT - STRIP_H
FPS = 24.0

#: Size of the downscaled scene the classifier works on (width, height).
SMALL_SIZE = (128, 88)

CLASSES: tuple[str, ...] = ("empty", "circle", "square", "triangle")

#: Segment lengths in frames (half a second to two seconds at 24 fps).
MIN_SEGMENT = 12
MAX_SEGMENT = 48
#: Shape "radius" range at full resolution; the smallest stays ~10 px wide after downscaling.
MIN_RADIUS = 24
MAX_RADIUS = 46
#: Minimum max-channel distance between shape and background colour, so the foreground is
#: separable from background + gradient + noise by a fixed threshold.
MIN_CONTRAST = 120
GRADIENT_AMPLITUDE = 15
NOISE_STD = 10.0
NOISE_BANK = 16

#: Seed strip layout: two rows of 20 cells of 16x8 pixels = 32 seed bits + 8 check bits.
_CELL_W = 16
_CELL_H = STRIP_H // 2
_CELLS_PER_ROW = WIDTH // _CELL_W
_SEED_BITS = 32
_CHECK_BITS = 8


@dataclass(frozen=True)
class Segment:
    """One run of frames with the same class; ``start`` is the index of its first frame."""

    start: int
    length: int
    label: int
    background: tuple[int, int, int]
    gradient: tuple[float, float]  # per-pixel slope along x and y, as a fraction of the amplitude
    colour: tuple[int, int, int]
    radius: int
    path: tuple[float, float, float, float]  # x0, y0, x1, y1 of the shape centre
    flip: bool  # triangles point down instead of up
    jitter: tuple[float, ...]  # per-vertex radius factors for triangles


def video_seed(seed: int) -> int:
    """The 32-bit seed that goes into the strip (any int seed is reduced deterministically)."""
    return int(np.random.SeedSequence(seed).generate_state(1, dtype=np.uint32)[0])


def _rgb(rng: np.random.Generator) -> tuple[int, int, int]:
    red, green, blue = (int(v) for v in rng.integers(0, 256, size=3))
    return red, green, blue


def sample_segment(rng: np.random.Generator, start: int, label: int | None = None) -> Segment:
    """Draw one segment; ``label`` forces the class (used to balance training data)."""
    length = int(rng.integers(MIN_SEGMENT, MAX_SEGMENT + 1))
    drawn = int(rng.integers(len(CLASSES)))
    cls = drawn if label is None else label
    background = _rgb(rng)
    # Rejection-sample a colour far enough from the background in at least one channel.
    while True:
        colour = _rgb(rng)
        if max(abs(a - b) for a, b in zip(colour, background)) >= MIN_CONTRAST:
            break
    radius = int(rng.integers(MIN_RADIUS, MAX_RADIUS + 1))
    margin = radius + 4
    x0, x1 = (float(v) for v in rng.uniform(margin, WIDTH - margin, size=2))
    y0, y1 = (float(v) for v in rng.uniform(margin, SCENE_H - margin, size=2))
    gradient = tuple(float(v) for v in rng.uniform(-1.0, 1.0, size=2))
    flip = bool(rng.integers(2))
    jitter = tuple(float(v) for v in rng.uniform(0.85, 1.1, size=3))
    return Segment(start, length, cls, background, (gradient[0], gradient[1]), colour, radius,
                   (x0, y0, x1, y1), flip, jitter)


def iter_segments(vseed: int) -> Iterator[Segment]:
    """Endless, deterministic segment sequence of the video with seed ``vseed``."""
    rng = np.random.default_rng([vseed, 1])
    start = 0
    while True:
        # Classes come in shuffled rounds of all four, so every class shows up within any
        # four consecutive segments and no class dominates a short video.
        for label in rng.permutation(len(CLASSES)):
            segment = sample_segment(rng, start, label=int(label))
            yield segment
            start += segment.length


def class_schedule(vseed: int, n_frames: int) -> list[int]:
    """Ground-truth class index of frames ``0 .. n_frames-1``."""
    labels: list[int] = []
    for segment in iter_segments(vseed):
        if len(labels) >= n_frames:
            break
        labels.extend([segment.label] * segment.length)
    return labels[:n_frames]


def noise_bank(vseed: int) -> np.ndarray:
    """A few full-frame noise fields; frames reuse them so noise costs no RNG time per frame."""
    rng = np.random.default_rng([vseed, 2])
    bank = rng.normal(0.0, NOISE_STD, size=(NOISE_BANK, HEIGHT, WIDTH, 3))
    return np.rint(bank).astype(np.int16)


def segment_background(segment: Segment) -> np.ndarray:
    """The segment's background (int16, full frame) including its gradient."""
    ys = np.linspace(-1.0, 1.0, HEIGHT, dtype=np.float32)[:, None]
    xs = np.linspace(-1.0, 1.0, WIDTH, dtype=np.float32)[None, :]
    ramp = GRADIENT_AMPLITUDE * (segment.gradient[0] * xs + segment.gradient[1] * ys) / 2.0
    base = np.array(segment.background, dtype=np.float32)[None, None, :]
    # Clip before the uint8 cast in render_frame, which would otherwise wrap 256 to 0.
    return np.clip(np.rint(base + ramp[:, :, None]), 0, 255).astype(np.int16)


def draw_shape(canvas: np.ndarray, segment: Segment, offset: int) -> None:
    """Draw the segment's shape at frame ``offset`` of the segment into ``canvas`` (in place)."""
    if CLASSES[segment.label] == "empty":
        return
    t = offset / max(segment.length - 1, 1)
    x0, y0, x1, y1 = segment.path
    cx, cy = x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
    r = segment.radius
    colour = segment.colour
    name = CLASSES[segment.label]
    # Sub-pixel coordinates (shift=4) keep the motion smooth rather than jumping whole pixels.
    shift = 4
    scale = 1 << shift
    if name == "circle":
        cv2.circle(canvas, (round(cx * scale), round(cy * scale)), round(r * scale), colour, -1,
                   lineType=cv2.LINE_AA, shift=shift)
    elif name == "square":
        h = 0.85 * r
        pts = np.array([[cx - h, cy - h], [cx + h, cy - h], [cx + h, cy + h], [cx - h, cy + h]])
        cv2.fillPoly(canvas, [np.rint(pts * scale).astype(np.int32)], colour, lineType=cv2.LINE_AA,
                     shift=shift)
    else:  # triangle
        angles = np.deg2rad([90.0, 210.0, 330.0] if segment.flip else [270.0, 30.0, 150.0])
        radii = r * np.array(segment.jitter)
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
        cv2.fillPoly(canvas, [np.rint(pts * scale).astype(np.int32)], colour, lineType=cv2.LINE_AA,
                     shift=shift)


def render_frame(segment: Segment, offset: int, background: np.ndarray, noise: np.ndarray,
                 vseed: int) -> np.ndarray:
    """Full BGR frame: background, moving shape, noise and the seed strip."""
    canvas = background.astype(np.uint8)
    draw_shape(canvas, segment, offset)
    frame = np.clip(canvas.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    draw_seed_strip(frame, vseed)
    return frame


def _strip_bits(vseed: int) -> list[int]:
    seed_bits = [(vseed >> i) & 1 for i in range(_SEED_BITS)]
    check = _checksum(vseed)
    return seed_bits + [(check >> i) & 1 for i in range(_CHECK_BITS)]


def _checksum(vseed: int) -> int:
    # Any fixed mixing function will do; it only has to reject frames that carry no strip.
    return (((vseed * 0x9E3779B1) >> 24) & 0xFF) ^ 0x5A


def draw_seed_strip(frame: np.ndarray, vseed: int) -> None:
    """Write the seed strip into the bottom rows of ``frame`` (in place)."""
    for i, bit in enumerate(_strip_bits(vseed)):
        row, col = divmod(i, _CELLS_PER_ROW)
        y = SCENE_H + row * _CELL_H
        x = col * _CELL_W
        frame[y:y + _CELL_H, x:x + _CELL_W] = 235 if bit else 20


def read_seed_strip(frame: np.ndarray) -> int | None:
    """Decode the video seed from a decoded frame; ``None`` if the strip is absent or corrupt."""
    if frame.shape[0] != HEIGHT or frame.shape[1] != WIDTH:
        return None
    bits: list[int] = []
    for i in range(_SEED_BITS + _CHECK_BITS):
        row, col = divmod(i, _CELLS_PER_ROW)
        y = SCENE_H + row * _CELL_H
        x = col * _CELL_W
        # Sample the cell's interior only: block edges carry the most JPEG ringing.
        cell = frame[y + 2:y + _CELL_H - 2, x + 3:x + _CELL_W - 3]
        bits.append(1 if float(cell.mean()) > 127.5 else 0)
    vseed = sum(b << i for i, b in enumerate(bits[:_SEED_BITS]))
    check = sum(b << i for i, b in enumerate(bits[_SEED_BITS:]))
    return vseed if check == _checksum(vseed) else None


def prepare_frame(frame: np.ndarray) -> np.ndarray:
    """Crop the scene (drop the seed strip) and downscale it to :data:`SMALL_SIZE`."""
    scene = frame[:SCENE_H]
    return cv2.resize(scene, SMALL_SIZE, interpolation=cv2.INTER_AREA)
