"""Shared helpers for the training scripts: training baseline, golden examples, manifest writing.

Every model version in the repository is a directory `models/<name>/<version>/` holding `model.onnx` and
`manifest.json`. The gateway refuses to serve a version whose manifest does not match the ONNX signature or whose
golden examples do not reproduce through the loaded session, so these helpers compute the golden outputs with
ONNX Runtime itself (the same engine the gateway embeds) and check them against the scikit-learn model first.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import sklearn
import skl2onnx

MODELS_DIR = Path(__file__).resolve().parent.parent
BASELINE_BINS = 10


def feature_baseline(name: str, column: np.ndarray, lower: float | None = None, upper: float | None = None) -> dict:
    """Per-feature statistics the gateway compares live traffic against (drift, range checks).

    Bin edges are interior cut points at training quantiles: k edges make k+1 bins, bin i holds values v with
    edges[i-1] < v <= edges[i] (numpy `searchsorted(side="left")`, Rust `partition_point(|e| e < v)`).
    Quantile bins keep every bin populated, which keeps the population stability index finite and meaningful.
    `lower`/`upper` declare the valid domain (not the training range): the gateway treats a value outside it like
    NaN, rejecting or counting it by policy.
    """
    col = np.asarray(column, dtype=np.float64)
    finite = col[np.isfinite(col)]
    qs = np.quantile(finite, np.linspace(0.0, 1.0, BASELINE_BINS + 1)[1:-1])
    edges = np.unique(qs)
    idx = np.searchsorted(edges, finite, side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1)
    out = {
        "name": name,
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "missing_share": float(1.0 - len(finite) / max(len(col), 1)),
        "bin_edges": [float(e) for e in edges],
        "bin_counts": [int(c) for c in counts],
    }
    if lower is not None:
        out["lower"] = float(lower)
    if upper is not None:
        out["upper"] = float(upper)
    return out


def categorical_baseline(name: str, column) -> dict:
    """Training baseline of a categorical (BYTES) feature: the categories seen in training, sorted, with their counts.

    No mean, std, range or bins: the gateway compares live traffic with `category_counts` (a value that is not in
    `categories` is an unseen category). `None` and the empty string count as missing.
    """
    values = [str(v) for v in np.asarray(column, dtype=object).reshape(-1) if v is not None and str(v) != ""]
    total = int(np.asarray(column, dtype=object).size)
    categories, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
    return {
        "name": name,
        "categories": [str(c) for c in categories],
        "category_counts": [int(c) for c in counts],
        "missing_share": float(1.0 - len(values) / max(total, 1)),
    }


def tensor_spec(name: str, datatype: str, shape: list[int]) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape}


def run_onnx(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def golden_examples(path: Path, feeds: dict[str, np.ndarray], rows_per_example: list[list[int]], tolerance: float) -> list:
    """Golden examples: inputs and the outputs ONNX Runtime gives for them, as v2 protocol tensors."""
    examples = []
    for rows in rows_per_example:
        sub = {k: v[rows] for k, v in feeds.items()}
        outs = run_onnx(path, sub)
        examples.append(
            {
                "inputs": [{"name": k, "shape": list(v.shape), "data": v.reshape(-1).tolist()} for k, v in sub.items()],
                "outputs": [{"name": k, "shape": list(v.shape), "data": v.reshape(-1).tolist()} for k, v in outs.items()],
                "tolerance": tolerance,
            }
        )
    return examples


def write_version(
    name: str,
    version: str,
    model: onnx.ModelProto,
    manifest: dict,
) -> Path:
    out = MODELS_DIR / name / version
    out.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(model)
    (out / "model.onnx").write_bytes(model.SerializeToString())
    manifest = {
        "schema_version": 1,
        "name": name,
        "version": version,
        **manifest,
    }
    manifest.setdefault("training", {})["libraries"] = {
        "scikit-learn": sklearn.__version__,
        "skl2onnx": skl2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def trained_at() -> str:
    # SOURCE_DATE_EPOCH lets a rebuild reproduce the committed manifest byte for byte.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc) if epoch else _dt.datetime.now(_dt.timezone.utc)
    return when.replace(microsecond=0).isoformat().replace("+00:00", "Z")
