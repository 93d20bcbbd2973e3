"""Train and export the `digits` model: a multilayer perceptron on scikit-learn's 8x8 handwritten digits, the bundled
model whose per-call cost, not the protocol, dominates a 1-row request, so dynamic batching has something to win.

Two hidden layers of 512 ReLU units: one call reads about 1.2 MB of weights whatever its row count, so a 1-row call
is bound by memory traffic and 64 rows in one call cost far less than 64 calls (`make bench` scenario 7 measures it).

Input `pixels` FP32 [-1, 64] (ink 0..16 per pixel, row by row); outputs `label` INT64 [-1] (the digit) and
`probabilities` FP32 [-1, 10] (no ZipMap).

Run: `python models/train/digits.py` (or `make models`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from common import feature_baseline, golden_examples, run_onnx, tensor_spec, trained_at, write_version

NAME = "digits"
SEED = 17
HIDDEN = (512, 512)


def main() -> None:
    ds = load_digits()
    x = ds.data.astype(np.float32)
    y = ds.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y)
    model = make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=HIDDEN, max_iter=300, early_stopping=True, random_state=SEED),
    ).fit(x_train, y_train)
    onx = to_onnx(
        model,
        initial_types=None,
        X=x_train[:1],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    # The graph's own names are what the gateway serves; rename the input to say what it holds.
    old = onx.graph.input[0].name
    onx.graph.input[0].name = "pixels"
    for node in onx.graph.node:
        node.input[:] = ["pixels" if i == old else i for i in node.input]
    sig_out = [o.name for o in onx.graph.output]
    assert sig_out == ["label", "probabilities"], sig_out
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(onx.SerializeToString())
        outs = run_onnx(path, {"pixels": x_test})
        assert (outs["label"] == model.predict(x_test)).mean() > 0.99, "ONNX labels disagree with scikit-learn"
        np.testing.assert_allclose(outs["probabilities"], model.predict_proba(x_test), atol=1e-4)
        accuracy = float((outs["label"] == y_test).mean())
        golden = golden_examples(path, {"pixels": x_test}, [[0], [1, 2, 3, 4]], tolerance=1e-4)
    write_version(
        NAME,
        "1",
        onx,
        {
            "description": "Handwritten digit (0-9) from 8x8 pixel ink levels, MLP with two 512-unit hidden layers",
            "trained_at": trained_at(),
            "training": {
                "algorithm": f"standard scaler + MLP {HIDDEN} ReLU, adam, early stopping",
                "data": "sklearn.datasets.load_digits, 80/20 stratified split, seed 17",
                "rows": int(len(x_train)),
                "metrics": {"test_accuracy": accuracy},
            },
            "inputs": [
                {
                    **tensor_spec("pixels", "FP32", [-1, 64]),
                    "features": [
                        feature_baseline(f"pixel_{r}_{c}", x_train[:, 8 * r + c], lower=0.0, upper=16.0)
                        for r in range(8)
                        for c in range(8)
                    ],
                }
            ],
            "outputs": [tensor_spec("label", "INT64", [-1]), tensor_spec("probabilities", "FP32", [-1, 10])],
            "golden": golden,
        },
    )
    print(f"{NAME}/1: MLP {HIDDEN}, test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
