"""Train and export the `diabetes` model: a ridge regressor with two inputs of other datatypes.

Inputs `features` FP64 [-1, 9] (age, bmi, bp, s1..s6 in their raw units) and `sex` INT64 [-1, 1] (1 or 2);
output `progression` FP64 [-1, 1] (disease progression one year after baseline). It exists so that FP64, INT64
and multi-input requests are real paths through the gateway, not just FP32.

Run: `python models/train/diabetes.py` (or `make models`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skl2onnx import to_onnx

from common import feature_baseline, golden_examples, run_onnx, tensor_spec, trained_at, write_version

NAME = "diabetes"
SEED = 11


def build_graph(model, x_train: np.ndarray) -> onnx.ModelProto:
    """Export the ridge pipeline on one FP64 matrix, then put a front on it that takes `features` + `sex`.

    The front casts `sex` to double and concatenates it as column 1, the column order the pipeline was fitted on.
    """
    core = to_onnx(model, x_train[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    g = core.graph
    old_in = g.input[0].name
    nodes = [
        helper.make_node("Cast", ["sex"], ["sex_f64"], to=TensorProto.DOUBLE),
        helper.make_node("Slice", ["features", "zero", "one", "axis1"], ["age"]),
        helper.make_node("Slice", ["features", "one", "nine", "axis1"], ["rest"]),
        helper.make_node("Concat", ["age", "sex_f64", "rest"], [old_in], axis=1),
    ]
    inits = [
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("nine", TensorProto.INT64, [1], [9]),
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
    ]
    out_name = g.output[0].name
    rename = helper.make_node("Identity", [out_name], ["progression"])
    graph = helper.make_graph(
        nodes + list(g.node) + [rename],
        "diabetes_ridge",
        [
            helper.make_tensor_value_info("features", TensorProto.DOUBLE, [None, 9]),
            helper.make_tensor_value_info("sex", TensorProto.INT64, [None, 1]),
        ],
        [helper.make_tensor_value_info("progression", TensorProto.DOUBLE, [None, 1])],
        initializer=inits + list(g.initializer),
    )
    out = helper.make_model(graph, opset_imports=core.opset_import, ir_version=core.ir_version)
    return out


def split():
    ds = load_diabetes(scaled=False)
    x = ds.data.astype(np.float64)
    y = ds.target.astype(np.float64)
    return ds, *train_test_split(x, y, test_size=0.2, random_state=SEED)


def train() -> dict:
    """The training-side model, deterministically: what `replay_capture.py` compares serving with."""
    _, x_train, _, y_train, _ = split()
    return {"1": make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(x_train, y_train)}


def predict(model, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Serving-side inputs (`features` without sex, `sex` apart) back into the training column order."""
    x = np.insert(inputs["features"].astype(np.float64), 1, inputs["sex"][:, 0].astype(np.float64), axis=1)
    return {"progression": model.predict(x).reshape(-1, 1)}


def main() -> None:
    ds, x_train, x_test, y_train, y_test = split()
    model = train()["1"]
    onx = build_graph(model, x_train)

    def feeds(m: np.ndarray) -> dict[str, np.ndarray]:
        return {"features": np.delete(m, 1, axis=1), "sex": m[:, 1:2].astype(np.int64)}

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(onx.SerializeToString())
        outs = run_onnx(path, feeds(x_test))
        np.testing.assert_allclose(outs["progression"][:, 0], model.predict(x_test), rtol=1e-9)
        rmse = float(np.sqrt(np.mean((outs["progression"][:, 0] - y_test) ** 2)))
        golden = golden_examples(path, feeds(x_test), [[0], [1, 2, 3]], tolerance=1e-6)
    names = [str(n) for n in ds.feature_names]
    feat_names = [n for i, n in enumerate(names) if i != 1]
    xf = feeds(x_train)
    write_version(
        NAME,
        "1",
        onx,
        {
            "description": "Diabetes progression one year after baseline, ridge regression",
            "trained_at": trained_at(),
            "training": {
                "algorithm": "standard scaler + ridge regression (alpha 1.0)",
                "data": "sklearn.datasets.load_diabetes(scaled=False), 80/20 split, seed 11",
                "rows": int(len(x_train)),
                "metrics": {"test_rmse": rmse},
            },
            "inputs": [
                {
                    **tensor_spec("features", "FP64", [-1, 9]),
                    # Age, BMI, blood pressure and serum measurements: negative values are invalid.
                    "features": [feature_baseline(n, xf["features"][:, i], lower=0.0) for i, n in enumerate(feat_names)],
                },
                {**tensor_spec("sex", "INT64", [-1, 1]), "features": [feature_baseline("sex", xf["sex"][:, 0], lower=1, upper=2)]},
            ],
            "outputs": [tensor_spec("progression", "FP64", [-1, 1])],
            "golden": golden,
        },
    )
    print(f"{NAME}/1: ridge regression, test RMSE {rmse:.1f}")


if __name__ == "__main__":
    main()
