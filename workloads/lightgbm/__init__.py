"""Bagged LightGBM training pipeline: ``pca -> train (k models) -> combine``.

Input: one ``.npz`` holding ``X`` (rows x 64 float32) and ``y`` (int8 class labels), drawn by
:func:`sklearn.datasets.make_classification` (3 classes, 16 informative + 32 redundant
features) with the number of rows chosen so the file is about the requested size.

Stages:

* ``pca`` (1 instance) holds out the last ``n_test`` rows as a test set (the rows are in random
  order), fits a PCA on the rest and writes k shard files ``shard-000`` ..., each a bootstrap
  sample of 2/k of the projected training rows plus the projected test set. k grows with the
  input (:func:`num_shards`), and so do the bytes written (about twice the training set).
* ``train`` (scatter, k instances) fits one LightGBM model per shard, seeded by the shard
  index and with slightly different hyper-parameters, and writes the test-set class
  probabilities and labels as ``pred``.
* ``combine`` (gather, 1 instance) averages the probabilities and writes ``result.json`` with
  the ensemble's test accuracy.

LightGBM runs with ``num_threads=1``: an instance is one core's worth of work, and a forked
child must never wait on an OpenMP thread pool inherited from its parent.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path

# Imported at module level on purpose: executors fork instances from a process that has loaded
# the app (the reference executor, warm worker pools), so each instance inherits these imports
# instead of paying about a second to import sklearn/lightgbm again. Importing starts no threads.
import lightgbm as lgb
import numpy as np
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA

import sonic
from sonic import Context, Validation

APP = sonic.App("lightgbm")

N_FEATURES = 64
N_INFORMATIVE = 16
N_REDUNDANT = 32
N_CLASSES = 3
#: Chosen so the ensemble's test accuracy is about 0.90 at 1 MB and 0.95 at 64 MB.
CLASS_SEP = 1.0
#: Stored bytes per row: 64 float32 features + one int8 label.
ROW_BYTES = N_FEATURES * 4 + 1
MIN_ROWS = 400
#: Rows written to the file per block while shuffling, to bound the extra memory.
WRITE_BLOCK_ROWS = 65_536

N_COMPONENTS = 24
MAX_TEST_ROWS = 2000
#: Input bytes per trained model; k = clamp(ceil(input / SHARD_INPUT_BYTES), 2, 32).
SHARD_INPUT_BYTES = 4_000_000
MIN_SHARDS, MAX_SHARDS = 2, 32
NUM_BOOST_ROUND = 60
#: Validator floor on the ensemble's test accuracy. Measured over 40 seeds at 1 MB (3891 rows):
#: 0.81-0.90, mean 0.87; it rises with size (0.88-0.94 at 10 MB). Guessing scores 1 / N_CLASSES.
ACCURACY_FLOOR = 0.75
#: Below this many rows (< about 0.75 MB) training sets are so small that accuracy drops to
#: 0.6-0.8, so tiny inputs only have to beat chance clearly.
SMALL_INPUT_ROWS = 3000
SMALL_INPUT_ACCURACY_FLOOR = 0.5

_SHARD_RE = re.compile(r"^shard-(\d{3,})$")


# --------------------------------------------------------------------------- sizing helpers
def num_test_rows(rows: int) -> int:
    """Held-out test rows: a fixed 2000, or a quarter of the rows for tiny inputs."""
    return min(MAX_TEST_ROWS, rows // 4)


def accuracy_floor(rows: int) -> float:
    """Lowest acceptable ensemble test accuracy for a dataset of ``rows`` rows."""
    return ACCURACY_FLOOR if rows >= SMALL_INPUT_ROWS else SMALL_INPUT_ACCURACY_FLOOR


def num_shards(rows: int) -> int:
    """Fanout k of ``pca -> train`` for a dataset of ``rows`` rows."""
    return min(MAX_SHARDS, max(MIN_SHARDS, math.ceil(rows * ROW_BYTES / SHARD_INPUT_BYTES)))


def _npz_shape(path: Path, key: str) -> tuple[int, ...]:
    """Shape of array ``key`` in an uncompressed ``.npz``, read from its header only."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, _ = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, _ = np.lib.format.read_array_header_2_0(fh)
    return tuple(shape)


def _input_file(path: Path) -> Path:
    """The dataset file: the input itself, or the single ``.npz`` of an input directory."""
    if path.is_file():
        return path
    found = sorted(p for p in path.iterdir() if p.is_file())
    if len(found) != 1:
        raise ValueError(f"lightgbm input {path} must be one .npz file, found {len(found)} files")
    return found[0]


# --------------------------------------------------------------------------- generator
@APP.generate_input
def gen(path: Path, size_bytes: int, seed: int) -> None:
    """Write a ``make_classification`` dataset of about ``size_bytes`` to ``path`` (.npz)."""
    rows = max(MIN_ROWS, size_bytes // ROW_BYTES)
    # shuffle=False keeps sklearn from making two extra full float64 copies; the rows (which
    # come out grouped by cluster) are permuted below while streaming them to the file.
    X, y = make_classification(
        n_samples=rows,
        n_features=N_FEATURES,
        n_informative=N_INFORMATIVE,
        n_redundant=N_REDUNDANT,
        n_classes=N_CLASSES,
        n_clusters_per_class=2,
        class_sep=CLASS_SEP,
        flip_y=0.01,
        shuffle=False,
        random_state=seed,
    )
    order = np.random.default_rng(seed).permutation(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    # An uncompressed zip written member by member is exactly what np.savez makes, but lets
    # the float32 rows be converted and written a block at a time.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("X.npy", "w", force_zip64=True) as fh:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
                      "fortran_order": False, "shape": (rows, N_FEATURES)}
            np.lib.format.write_array_header_1_0(fh, header)
            for start in range(0, rows, WRITE_BLOCK_ROWS):
                fh.write(X[order[start:start + WRITE_BLOCK_ROWS]].astype("<f4").tobytes())
        del X
        with zf.open("y.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array(fh, y[order].astype(np.int8))


@APP.input_features
def features(path: Path) -> dict[str, float]:
    rows, dims = _npz_shape(_input_file(Path(path)), "X")
    return {"rows": float(rows), "features": float(dims)}


# --------------------------------------------------------------------------- stages
@APP.stage()
def pca(ctx: Context) -> None:
    """Project on the top principal components and write k bagged training shards."""
    (source,) = ctx.inputs
    with np.load(source) as data:
        X = data["X"]
        y = data["y"]
    rows = len(y)
    n_test = num_test_rows(rows)
    k = num_shards(rows)
    X_train, y_train = X[: rows - n_test], y[: rows - n_test]
    X_test, y_test = X[rows - n_test:], y[rows - n_test:]
    # covariance_eigh: one pass over a tall-skinny matrix (64 columns), far cheaper than an SVD.
    model = PCA(n_components=min(N_COMPONENTS, X.shape[1]), svd_solver="covariance_eigh").fit(X_train)
    Z_train = model.transform(X_train).astype(np.float32)
    Z_test = model.transform(X_test).astype(np.float32)
    per_shard = max(1, math.ceil(2 * len(Z_train) / k))
    width = max(3, len(str(k - 1)))
    for i in range(k):
        # Bootstrap with the shard index as seed: reruns of an instance produce the same bytes.
        picks = np.random.default_rng(i).integers(0, len(Z_train), size=per_shard)
        with ctx.output(f"shard-{i:0{width}d}").open("wb") as fh:
            np.savez(fh, X_train=Z_train[picks], y_train=y_train[picks], X_test=Z_test, y_test=y_test,
                     n_classes=np.int64(N_CLASSES))


def shard_params(index: int, n_classes: int) -> dict[str, object]:
    """LightGBM parameters of model ``index``: same objective, varied capacity and sampling."""
    return {
        "objective": "multiclass",
        "num_class": n_classes,
        "num_leaves": (15, 23, 31, 39)[index % 4],
        "learning_rate": 0.1,
        "feature_fraction": (0.7, 0.8, 0.9)[index % 3],
        "lambda_l2": 0.1 * (index % 5),
        "min_data_in_leaf": 20,
        "num_threads": 1,
        "seed": index,
        "deterministic": True,
        "force_col_wise": True,
        "verbose": -1,
    }


@APP.stage(after="pca", pattern="scatter")
def train(ctx: Context) -> None:
    """Fit one model on one shard; write its test-set probabilities and the test labels."""
    match = _SHARD_RE.match(ctx.key or "")
    if match is None:
        raise ValueError(f"train got scatter key {ctx.key!r}; expected a shard name like shard-003")
    index = int(match.group(1))
    (source,) = ctx.inputs
    with np.load(source) as data:
        X_train, y_train = data["X_train"], data["y_train"]
        X_test, y_test = data["X_test"], data["y_test"]
        n_classes = int(data["n_classes"])
    booster = lgb.train(shard_params(index, n_classes), lgb.Dataset(X_train, label=y_train),
                        num_boost_round=NUM_BOOST_ROUND)
    probs = np.asarray(booster.predict(X_test, num_threads=1), dtype=np.float32)
    with ctx.output("pred").open("wb") as fh:
        np.savez(fh, probs=probs, y_test=y_test, shard=np.int64(index))


@APP.stage(after="train", pattern="gather")
def combine(ctx: Context) -> None:
    """Average the models' probabilities and score the ensemble on the test set."""
    probs: list[np.ndarray] = []
    per_model: dict[int, float] = {}
    y_test: np.ndarray | None = None
    for path in ctx.inputs:
        with np.load(path) as data:
            p, labels, shard = data["probs"], data["y_test"], int(data["shard"])
        if y_test is None:
            y_test = labels
        elif not np.array_equal(y_test, labels):
            raise ValueError(f"{path}: model {shard} was tested on different labels than the others")
        probs.append(p)
        per_model[shard] = float(np.mean(p.argmax(axis=1) == labels))
    if y_test is None:
        raise ValueError("combine received no predictions")
    ensemble = np.mean(probs, axis=0)
    result = {
        "accuracy": float(np.mean(ensemble.argmax(axis=1) == y_test)),
        "n_models": len(probs),
        "n_test": int(len(y_test)),
        "n_classes": int(ensemble.shape[1]),
        "model_accuracy": {str(k): v for k, v in sorted(per_model.items())},
    }
    ctx.output("result.json").write_text(json.dumps(result, indent=2))


# --------------------------------------------------------------------------- validator
@APP.validate_output
def validate(input_path: Path, outputs: list[Path]) -> Validation:
    """``result.json`` reports every expected model and an accuracy above the floor."""
    results = [Path(p) for p in outputs if Path(p).name == "result.json"]
    if len(results) != 1:
        return Validation(False, f"expected one result.json among the outputs, found {len(results)}")
    try:
        result = json.loads(results[0].read_text())
        accuracy, n_models, n_test = float(result["accuracy"]), int(result["n_models"]), int(result["n_test"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Validation(False, f"result.json is unreadable or incomplete: {exc}")
    rows, _ = _npz_shape(_input_file(Path(input_path)), "X")
    want_models, want_test = num_shards(rows), num_test_rows(rows)
    if n_models != want_models:
        return Validation(False, f"{n_models} models combined, expected {want_models} for {rows} rows")
    if n_test != want_test:
        return Validation(False, f"tested on {n_test} rows, expected {want_test}")
    floor = accuracy_floor(rows)
    if not accuracy >= floor:  # also rejects NaN
        return Validation(False, f"test accuracy {accuracy:.4f} is below the floor {floor}")
    return Validation(True, f"accuracy {accuracy:.4f} of {n_models} models on {n_test} test rows")
