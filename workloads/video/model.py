"""The frame classifier of the video workload: features, offline training and the on-disk cache.

Features are computed on the downscaled scene (:func:`workloads.video.scene.prepare_frame`):
the foreground is every pixel far from the background colour (median of the frame border);
its largest blob gives a few shape descriptors (area, circularity, solidity, fill of the
bounding box / enclosing circle / enclosing triangle, vertex count of a polygon fit) plus the
blob's mask resized to 12x12 ("downscaled pixels"). A small random forest maps those to the
four scene classes.

Training uses frames from the same renderer as the input generator, pushed through a JPEG
round trip so they carry codec artifacts like the decoded video does. It is deterministic
(fixed seed, single-threaded forest) and takes a couple of seconds. The fitted model is cached
under ``$SONIC_CACHE_DIR`` (default ``~/.cache/sonic``) in ``video/``, keyed by a hash of the
training parameters and the scikit-learn version (pickles do not travel across versions).
Concurrent processes are safe: training happens under an exclusive ``flock`` and the model is
published by an atomic rename, so readers see either no file or a complete one.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import math
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import sklearn
from sklearn.ensemble import RandomForestClassifier

from workloads.video import media, scene

#: Everything that changes the fitted model; its hash names the cache file.
TRAINING_PARAMS: dict[str, Any] = {
    "feature_version": 1,
    "scene_version": 1,
    "seed": 20240611,
    "per_class": 200,
    "trees": 40,
    "jpeg_quality": [70, 95],
    "small_size": list(scene.SMALL_SIZE),
}

#: Max-channel distance from the background above which a pixel is foreground. The scene
#: guarantees >= MIN_CONTRAST for shapes and at most ~GRADIENT_AMPLITUDE + noise for background.
FOREGROUND_THRESHOLD = 50
MASK_GRID = 12
#: Blobs smaller than this many pixels (of the small frame) are noise, not a shape.
MIN_BLOB_AREA = 12.0
N_SCALAR_FEATURES = 8
N_FEATURES = N_SCALAR_FEATURES + MASK_GRID * MASK_GRID


def frame_features(small: np.ndarray) -> np.ndarray:
    """Feature vector (float32, :data:`N_FEATURES`) of one downscaled BGR scene."""
    img = small.astype(np.int16)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]], axis=0)
    background = np.median(border, axis=0)
    diff = np.abs(img - background[None, None, :]).max(axis=2)
    mask = np.where(diff > FOREGROUND_THRESHOLD, 255, 0).astype(np.uint8)
    # A 3x3 median removes isolated noise pixels without eroding the shape's corners much.
    denoised = cv2.medianBlur(mask, 3)
    out = np.zeros(N_FEATURES, dtype=np.float32)
    contours, _ = cv2.findContours(denoised, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return out
    blob = max(contours, key=cv2.contourArea)
    area = float(cv2.contourArea(blob))
    if area < MIN_BLOB_AREA:
        return out
    perimeter = float(cv2.arcLength(blob, True))
    x, y, w, h = cv2.boundingRect(blob)
    hull_area = float(cv2.contourArea(cv2.convexHull(blob)))
    _, enclosing_r = cv2.minEnclosingCircle(blob)
    triangle_area, _ = cv2.minEnclosingTriangle(blob)
    vertices = len(cv2.approxPolyDP(blob, 0.04 * perimeter, True))
    out[:N_SCALAR_FEATURES] = (
        area / denoised.size,
        4.0 * math.pi * area / max(perimeter * perimeter, 1e-6),  # circularity: 1 for a disc
        area / max(hull_area, 1e-6),  # solidity
        area / max(w * h, 1),  # bounding-box fill: ~1 square, ~0.79 circle, ~0.5 triangle
        area / max(math.pi * enclosing_r * enclosing_r, 1e-6),
        area / max(float(triangle_area), 1e-6),
        min(vertices, 8) / 8.0,
        w / max(h, 1),
    )
    crop = denoised[y:y + h, x:x + w]
    grid = cv2.resize(crop, (MASK_GRID, MASK_GRID), interpolation=cv2.INTER_AREA)
    out[N_SCALAR_FEATURES:] = grid.reshape(-1).astype(np.float32) / 255.0
    return out


def features_of(frames: np.ndarray) -> np.ndarray:
    """Stack the features of ``frames`` (n, h, w, 3) into an (n, N_FEATURES) matrix."""
    if len(frames) == 0:
        return np.zeros((0, N_FEATURES), dtype=np.float32)
    return np.stack([frame_features(f) for f in frames])


def training_set(params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Balanced synthetic training frames (features, labels) for ``params``."""
    rng = np.random.default_rng(params["seed"])
    vseed = int(params["seed"]) & 0xFFFFFFFF
    noise = scene.noise_bank(vseed)
    lo, hi = params["jpeg_quality"]
    feats: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(params["per_class"]):
        for label in range(len(scene.CLASSES)):
            segment = scene.sample_segment(rng, 0, label=label)
            offset = int(rng.integers(segment.length))
            frame = scene.render_frame(segment, offset, scene.segment_background(segment),
                                       noise[int(rng.integers(len(noise)))], vseed)
            # The JPEG round trip gives training frames the same kind of artifacts as the
            # MJPG-decoded input; a range of qualities keeps the model robust to the codec.
            quality = int(rng.integers(lo, hi + 1))
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise RuntimeError("cv2.imencode failed while rendering training frames")
            decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
            if decoded is None:
                raise RuntimeError("cv2.imdecode failed while rendering training frames")
            feats.append(frame_features(scene.prepare_frame(decoded)))
            labels.append(label)
    return np.stack(feats), np.array(labels, dtype=np.int64)


@media.opencv_serial
def train(params: dict[str, Any] | None = None) -> RandomForestClassifier:
    """Fit the classifier from scratch (deterministic for given ``params``)."""
    params = TRAINING_PARAMS if params is None else params
    x, y = training_set(params)
    model = RandomForestClassifier(n_estimators=params["trees"], random_state=params["seed"], n_jobs=1)
    model.fit(x, y)
    return model


def cache_dir() -> Path:
    """Where cached models live: ``$SONIC_CACHE_DIR/video`` or ``~/.cache/sonic/video``."""
    root = os.environ.get("SONIC_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "sonic"
    return base / "video"


def params_key(params: dict[str, Any]) -> str:
    doc = json.dumps({"params": params, "sklearn": sklearn.__version__}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def model_path(params: dict[str, Any] | None = None) -> Path:
    params = TRAINING_PARAMS if params is None else params
    return cache_dir() / f"classifier-{params_key(params)}.pkl"


def _read_model(path: Path) -> RandomForestClassifier | None:
    try:
        with open(path, "rb") as fh:
            doc = pickle.load(fh)
    except FileNotFoundError:
        return None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError):
        # Not ours or from an incompatible build: treat as missing and retrain over it.
        return None
    model = doc.get("model") if isinstance(doc, dict) else None
    if not isinstance(model, RandomForestClassifier) or doc.get("classes") != list(scene.CLASSES):
        return None
    return model


def load_or_train(params: dict[str, Any] | None = None) -> RandomForestClassifier:
    """The cached model for ``params``, training and caching it first if it is missing."""
    params = TRAINING_PARAMS if params is None else params
    path = model_path(params)
    model = _read_model(path)
    if model is not None:
        return model
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        # One trainer at a time; whoever waited re-checks, since the holder probably finished it.
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            model = _read_model(path)
            if model is not None:
                return model
            model = train(params)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    pickle.dump({"model": model, "classes": list(scene.CLASSES), "params": params}, fh,
                                protocol=pickle.HIGHEST_PROTOCOL)
                # mkstemp creates 0600; the cache is shared by every process of the user.
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
            return model
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@functools.lru_cache(maxsize=1)
def classifier() -> RandomForestClassifier:
    """Process-wide model for the default parameters (a warm worker loads it once)."""
    return load_or_train(TRAINING_PARAMS)
