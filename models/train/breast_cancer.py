"""Train and export the `breast-cancer` model: version 1 (logistic regression), version 2 (gradient boosted trees),
and version 3, a deliberately bad candidate for the rollout demonstration: the same trees trained on labels that a
simulated data-pipeline bug flipped for large tumours, so it calls many malignant tumours benign. Its manifest marks
it `"stage": "candidate"`, so the gateway never makes it stable on its own; only a canary (and the rollout
controller, which rolls it back) gives it traffic.

Input `input` FP32 [-1, 30]; outputs `label` INT64 [-1] and `probabilities` FP32 [-1, 2] (no ZipMap, so the
probabilities are a plain tensor that any Open Inference Protocol client can read).

Run: `python models/train/breast_cancer.py` (or `make models`).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skl2onnx import to_onnx

from common import MODELS_DIR, feature_baseline, golden_examples, run_onnx, tensor_spec, trained_at, write_version

NAME = "breast-cancer"
SEED = 7


def data():
    ds = load_breast_cancer()
    x = ds.data.astype(np.float32)
    y = ds.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y)
    return ds, x_train, x_test, y_train, y_test


def export(model, version: str, algorithm: str, x_train, x_test, y_test, feature_names, extra=None) -> None:
    onx = to_onnx(model, x_train[:1], options={id(model): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    # skl2onnx names the graph input `X`; the protocol name users see is `input`.
    onx.graph.input[0].name = "input"
    for node in onx.graph.node:
        node.input[:] = ["input" if i == "X" else i for i in node.input]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(onx.SerializeToString())
        outs = run_onnx(path, {"input": x_test})
        # The exported graph must agree with the scikit-learn model it came from, or the golden examples would
        # enshrine a conversion bug.
        assert (outs["label"] == model.predict(x_test)).mean() > 0.99, "ONNX labels disagree with scikit-learn"
        np.testing.assert_allclose(outs["probabilities"], model.predict_proba(x_test), atol=1e-4)
        accuracy = float((outs["label"] == y_test).mean())
        golden = golden_examples(path, {"input": x_test}, [[0], [1, 2, 3, 4], [5, 6]], tolerance=1e-4)
    write_version(
        NAME,
        version,
        onx,
        {
            "description": f"Breast cancer diagnosis (0 = malignant, 1 = benign), {algorithm}",
            "trained_at": trained_at(),
            "training": {
                "algorithm": algorithm,
                "data": "sklearn.datasets.load_breast_cancer (Wisconsin diagnostic), 80/20 stratified split, seed 7",
                "rows": int(len(x_train)),
                "metrics": {"test_accuracy": accuracy},
            },
            "inputs": [
                {
                    **tensor_spec("input", "FP32", [-1, 30]),
                    # Every feature is a size, count or ratio of a cell nucleus: negative values are invalid.
                    "features": [feature_baseline(n, x_train[:, i], lower=0.0) for i, n in enumerate(feature_names)],
                }
            ],
            "outputs": [tensor_spec("label", "INT64", [-1]), tensor_spec("probabilities", "FP32", [-1, 2])],
            "golden": golden,
            **(extra or {}),
        },
    )
    print(f"{NAME}/{version}: {algorithm}, test accuracy {accuracy:.3f}")


def train() -> dict:
    """The training-side models, deterministically (fixed seeds): what `replay_capture.py` compares serving with."""
    ds, x_train, x_test, y_train, y_test = data()
    lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=SEED)).fit(x_train, y_train)
    gb = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=SEED).fit(x_train, y_train)
    bad = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=SEED)
    bad.fit(x_train, corrupted(ds, x_train, y_train))
    return {"1": lr, "2": gb, "3": bad}


# The bug version 3 simulates: labels flipped for tumours whose worst area is above this training quantile.
CORRUPT_QUANTILE = 0.6


def corrupted(ds, x_train, y_train):
    col = list(ds.feature_names).index("worst area")
    cut = np.quantile(x_train[:, col], CORRUPT_QUANTILE)
    return np.where(x_train[:, col] > cut, 1 - y_train, y_train)


def predict(model, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The training-side pipeline on serving-side inputs, as the ONNX signature names them."""
    x = inputs["input"].astype(np.float32)
    return {"label": model.predict(x).astype(np.int64), "probabilities": model.predict_proba(x).astype(np.float32)}


def write_traffic(x_test) -> None:
    """The held-out rows as JSON Lines for the load tester (`--rows-file`): realistic traffic for the rollout
    demonstration, where uniform random rows would look drifted to every version."""
    out = MODELS_DIR.parent / "loadtest" / "data" / f"{NAME}-test.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps([round(float(v), 6) for v in row]) + "\n" for row in x_test))
    print(f"{out.relative_to(MODELS_DIR.parent)}: {len(x_test)} held-out rows")


def main() -> None:
    ds, x_train, x_test, y_train, y_test = data()
    write_traffic(x_test)
    names = [str(n) for n in ds.feature_names]
    models = train()
    export(models["1"], "1", "standard scaler + logistic regression", x_train, x_test, y_test, names)
    export(models["2"], "2", "gradient boosted trees (100 trees, depth 3)", x_train, x_test, y_test, names)
    export(
        models["3"],
        "3",
        "gradient boosted trees on corrupted labels (deliberately bad: for the rollback demonstration)",
        x_train,
        x_test,
        y_test,
        names,
        extra={"stage": "candidate"},
    )


if __name__ == "__main__":
    main()
