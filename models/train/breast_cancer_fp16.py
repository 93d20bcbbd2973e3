"""Train and export `breast-cancer-fp16`: version 1 of `breast-cancer` (standard scaler + logistic regression, same
split and seed) converted to half precision, as someone converting a model to FP16 for speed would ship it, so that
FP16 tensors are a real path through the gateway. It is a model of its own, not a version of `breast-cancer`: its
signature differs (FP16 in and out), so it could not share traffic with the FP32 versions.

Input `input` FP16 [-1, 30]; outputs `label` INT64 [-1] and `probabilities` FP16 [-1, 2].

The graph is written by hand with `onnx.helper`, every arithmetic node in float16, and the scaler is folded into
the graph rather than into the coefficients: raw features reach about 4300 (worst area), and a product of a raw
feature with a coefficient divided by its standard deviation could leave FP16's range (65504), so the graph first
standardises elementwise (`Sub` the training mean, `Mul` by 1 / std: values of a few units), then `MatMul`s with
the coefficients. The binary logistic regression becomes a two-class softmax: logits (-z/2, z/2) give
softmax = (1 - sigmoid(z), sigmoid(z)), the probabilities scikit-learn reports.

Run: `python models/train/breast_cancer_fp16.py` (or `make models`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from breast_cancer import SEED, data
from common import feature_baseline, golden_examples, run_onnx, tensor_spec, trained_at, write_version

NAME = "breast-cancer-fp16"
N_FEATURES = 30
# ONNX Runtime's own opset and IR version for this graph; the same default opset as the other bundled models.
OPSET = 17
IR_VERSION = 8
# `replay_capture.py` compares the FP16 answers with the FP32 training model: FP16 rounding (an ulp is 2^-11 just
# below 1) allows this relative difference; a larger one is a real mismatch.
REPLAY_TOLERANCE = 2e-3


def train() -> dict:
    """The training-side model, deterministically (the same fit as `breast-cancer` version 1)."""
    _, x_train, _, y_train, _ = data()
    return {"1": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=SEED)).fit(x_train, y_train)}


def predict(model, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The training-side pipeline (in FP32/FP64, as trained) on serving-side inputs."""
    x = inputs["input"].astype(np.float32)
    return {"label": model.predict(x).astype(np.int64), "probabilities": model.predict_proba(x).astype(np.float16)}


def half(name: str, value: np.ndarray) -> onnx.TensorProto:
    v = np.asarray(value, dtype=np.float64)
    h = v.astype(np.float16)
    assert np.all(np.isfinite(h)), f"{name} overflows float16"
    return numpy_helper.from_array(h, name)


def build_graph(model) -> onnx.ModelProto:
    scaler, lr = model[0], model[-1]
    assert lr.coef_.shape == (1, N_FEATURES), lr.coef_.shape
    w = lr.coef_[0]
    b = float(lr.intercept_[0])
    inits = [
        half("mean", scaler.mean_),
        half("inv_std", 1.0 / scaler.scale_),
        half("coef", np.stack([-w / 2.0, w / 2.0], axis=1)),  # [30, 2]
        half("intercept", np.array([-b / 2.0, b / 2.0])),
    ]
    nodes = [
        helper.make_node("Sub", ["input", "mean"], ["centered"]),
        helper.make_node("Mul", ["centered", "inv_std"], ["standardized"]),
        helper.make_node("MatMul", ["standardized", "coef"], ["product"]),
        helper.make_node("Add", ["product", "intercept"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "breast_cancer_logistic_fp16",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT16, [None, N_FEATURES])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT16, [None, 2]),
        ],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


def main() -> None:
    ds, x_train, x_test, y_train, y_test = data()
    model = train()["1"]
    onx = build_graph(model)
    h_train, h_test = x_train.astype(np.float16), x_test.astype(np.float16)
    assert np.all(np.isfinite(h_train)) and np.all(np.isfinite(h_test))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(onx.SerializeToString())
        outs = run_onnx(path, {"input": h_test})
        assert outs["probabilities"].dtype == np.float16 and outs["label"].dtype == np.int64
        # Half precision must not change the model: the same labels as scikit-learn on the FP32 inputs, and
        # probabilities within what FP16 rounding of the inputs and the arithmetic explains.
        sk_label, sk_proba = model.predict(x_test), model.predict_proba(x_test)
        assert (outs["label"] == sk_label).mean() > 0.99, "FP16 labels disagree with scikit-learn"
        max_diff = float(np.abs(outs["probabilities"].astype(np.float64) - sk_proba).max())
        assert max_diff < 1e-2, f"FP16 probabilities differ from scikit-learn by {max_diff}"
        np.testing.assert_array_equal(outs["label"], outs["probabilities"].argmax(axis=1))
        accuracy = float((outs["label"] == y_test).mean())
        golden = golden_examples(path, {"input": h_test}, [[0], [1, 2, 3, 4], [5, 6]], tolerance=1e-3)
    names = [str(n) for n in ds.feature_names]
    write_version(
        NAME,
        "1",
        onx,
        {
            "description": (
                "Breast cancer diagnosis (0 = malignant, 1 = benign), standard scaler + logistic regression in half"
                " precision (FP16)"
            ),
            "trained_at": trained_at(),
            "training": {
                "algorithm": "standard scaler + logistic regression, exported as an FP16 graph (Sub, Mul, MatMul, Add, Softmax)",
                "data": "sklearn.datasets.load_breast_cancer (Wisconsin diagnostic), 80/20 stratified split, seed 7",
                "rows": int(len(x_train)),
                "metrics": {
                    "test_accuracy": accuracy,
                    "agreement_with_fp32": float((outs["label"] == sk_label).mean()),
                    "max_probability_diff_from_fp32": max_diff,
                },
            },
            "inputs": [
                {
                    **tensor_spec("input", "FP16", [-1, N_FEATURES]),
                    # The baseline of what the gateway receives: the training rows rounded to FP16.
                    "features": [feature_baseline(n, h_train[:, i], lower=0.0) for i, n in enumerate(names)],
                }
            ],
            "outputs": [tensor_spec("label", "INT64", [-1]), tensor_spec("probabilities", "FP16", [-1, 2])],
            "golden": golden,
        },
    )
    print(f"{NAME}/1: FP16 logistic regression, test accuracy {accuracy:.3f}, max |p - p_fp32| {max_diff:.2g}")


if __name__ == "__main__":
    main()
