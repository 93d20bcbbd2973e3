"""Train and export the `wine` model: a classifier with a string input, so that BYTES tensors (ONNX
`tensor(string)`) and categorical training baselines are real paths through the gateway.

The wine's colour intensity is not sent as a number but as a category a sommelier would write down: `pale`,
`light`, `medium` or `deep` (fixed cut points on the absorbance, see `COLOR_CUTS`). The model one-hot encodes it
(unknown categories encode as all zeros, so a colour never seen in training, say `violet`, still gets an answer),
standardises the 12 other measurements and classifies the cultivar with a multinomial logistic regression.

Inputs `features` FP32 [-1, 12] (the wine measurements except colour intensity, in `load_wine` order) and `color`
BYTES [-1, 1]; outputs `label` INT64 [-1] (cultivar 0, 1 or 2) and `probabilities` FP32 [-1, 3] (no ZipMap).

Run: `python models/train/wine.py` (or `make models`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from common import categorical_baseline, feature_baseline, golden_examples, run_onnx, tensor_spec, trained_at, write_version

NAME = "wine"
SEED = 13
COLOR_FEATURE = "color_intensity"
# Colour intensity (absorbance) cut points: v <= 3 is pale, 3 < v <= 5 light, 5 < v <= 7.5 medium, above deep.
COLOR_CUTS = [3.0, 5.0, 7.5]
COLOR_NAMES = ["pale", "light", "medium", "deep"]
N_NUMERIC = 12
# A colour no training row has: the one-hot encoder ignores it (all-zero encoding), in scikit-learn and in ONNX.
UNSEEN_COLOR = "violet"


def color_category(intensity: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(np.asarray(COLOR_CUTS), np.asarray(intensity, dtype=np.float64), side="left")
    return np.asarray(COLOR_NAMES, dtype=object)[idx]


def split():
    """The serving-side inputs (`features` FP32 without colour intensity, `color` as strings [n, 1]) and labels."""
    ds = load_wine()
    col = list(ds.feature_names).index(COLOR_FEATURE)
    features = np.delete(ds.data, col, axis=1).astype(np.float32)
    color = color_category(ds.data[:, col]).reshape(-1, 1)
    y = ds.target.astype(np.int64)
    f_train, f_test, c_train, c_test, y_train, y_test = train_test_split(
        features, color, y, test_size=0.2, random_state=SEED, stratify=y
    )
    names = [str(n) for n in ds.feature_names if n != COLOR_FEATURE]
    return names, f_train, f_test, c_train, c_test, y_train, y_test


def table(features: np.ndarray, color: np.ndarray) -> np.ndarray:
    """What the scikit-learn pipeline is fitted on: one object matrix, the 12 measurements (as the FP32 values the
    gateway receives) then the colour. Columns 0..11 map to the ONNX input `features`, column 12 to `color`."""
    return np.concatenate([features.astype(np.float32).astype(object), color.astype(object)], axis=1)


def make_model():
    pre = ColumnTransformer(
        [
            ("numeric", StandardScaler(), list(range(N_NUMERIC))),
            ("color", OneHotEncoder(handle_unknown="ignore"), [N_NUMERIC]),
        ]
    )
    return make_pipeline(pre, LogisticRegression(max_iter=1000, random_state=SEED))


def train() -> dict:
    """The training-side model, deterministically: what `replay_capture.py` compares serving with."""
    _, f_train, _, c_train, _, y_train, _ = split()
    return {"1": make_model().fit(table(f_train, c_train), y_train)}


def predict(model, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The training-side pipeline on serving-side inputs, as the ONNX signature names them."""
    x = table(inputs["features"], np.asarray(inputs["color"], dtype=object).reshape(-1, 1))
    return {"label": model.predict(x).astype(np.int64), "probabilities": model.predict_proba(x).astype(np.float32)}


def export(model):
    # Two graph inputs: skl2onnx maps the ColumnTransformer's integer columns over them in order (0..11 are
    # `features`, 12 is `color`), so neither needs slicing or renaming.
    return to_onnx(
        model,
        initial_types=[("features", FloatTensorType([None, N_NUMERIC])), ("color", StringTensorType([None, 1]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )


def main() -> None:
    names, f_train, f_test, c_train, c_test, y_train, y_test = split()
    model = train()["1"]
    encoder = model[0].named_transformers_["color"]
    assert [str(c) for c in encoder.categories_[0]] == sorted(COLOR_NAMES), encoder.categories_
    onx = export(model)
    sig_in = [(i.name, i.type.tensor_type.elem_type) for i in onx.graph.input]
    sig_out = [o.name for o in onx.graph.output]
    assert sig_in == [("features", 1), ("color", 8)], sig_in  # FLOAT, STRING
    assert sig_out == ["label", "probabilities"], sig_out

    # The golden feeds: the test split, plus two test rows again with a colour never seen in training.
    n = len(f_test)
    g_features = np.concatenate([f_test, f_test[[0, 7]]])
    g_color = np.concatenate([c_test, np.asarray([[UNSEEN_COLOR], [UNSEEN_COLOR]], dtype=object)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(onx.SerializeToString())
        outs = run_onnx(path, {"features": g_features, "color": g_color})
        # The exported graph must agree with the scikit-learn model it came from, unseen colours included, or the
        # golden examples would enshrine a conversion bug.
        want = predict(model, {"features": g_features, "color": g_color})
        assert (outs["label"] == want["label"]).mean() > 0.99, "ONNX labels disagree with scikit-learn"
        np.testing.assert_allclose(outs["probabilities"], want["probabilities"], atol=1e-4)
        # The unseen colour changes the answer (it drops the colour's evidence) but does not fail.
        assert not np.allclose(outs["probabilities"][n:], outs["probabilities"][[0, 7]])
        accuracy = float((outs["label"][:n] == y_test).mean())
        # One row; four rows with all four colours; two rows, one of them an unseen colour; the unseen colour alone.
        rows = [[0], four_colours(c_test), [1, n + 1], [n]]
        golden = golden_examples(path, {"features": g_features, "color": g_color}, rows, tolerance=1e-4)
    write_version(
        NAME,
        "1",
        onx,
        {
            "description": "Wine cultivar (0, 1, 2) from 12 measurements and the colour as a word, logistic regression",
            "trained_at": trained_at(),
            "training": {
                "algorithm": "standard scaler + one-hot colour (unknown colours ignored) + logistic regression",
                "data": (
                    "sklearn.datasets.load_wine, color_intensity binned at 3 / 5 / 7.5 into pale / light / medium /"
                    " deep, 80/20 stratified split, seed 13"
                ),
                "rows": int(len(f_train)),
                "metrics": {"test_accuracy": accuracy},
            },
            "inputs": [
                {
                    **tensor_spec("features", "FP32", [-1, N_NUMERIC]),
                    # Concentrations, absorbances, ratios and counts: negative values are invalid.
                    "features": [feature_baseline(nm, f_train[:, i], lower=0.0) for i, nm in enumerate(names)],
                },
                {**tensor_spec("color", "BYTES", [-1, 1]), "features": [categorical_baseline("color", c_train[:, 0])]},
            ],
            "outputs": [tensor_spec("label", "INT64", [-1]), tensor_spec("probabilities", "FP32", [-1, 3])],
            "golden": golden,
        },
    )
    print(f"{NAME}/1: logistic regression with a categorical colour, test accuracy {accuracy:.3f}")


def four_colours(color: np.ndarray) -> list[int]:
    """The first test row of each colour, in `COLOR_NAMES` order."""
    return [int(np.flatnonzero(color[:, 0] == c)[0]) for c in COLOR_NAMES]


if __name__ == "__main__":
    main()
