"""The replay passes on a clean capture and finds injected mismatches. Captures are written the way the gateway
writes them (see gateway/src/mirror/capture.rs), with outputs computed by ONNX Runtime on the committed model, as
serving computes them.

Run: python -m unittest discover -s models/train -p 'test_*.py'  (part of `make test`)
"""

from __future__ import annotations

import json
import tempfile
import unittest
from pathlib import Path

import numpy as np
import onnxruntime as ort

import breast_cancer
import replay_capture
import wine

MODELS = Path(__file__).resolve().parent.parent


def serve(version: str, x: np.ndarray) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(MODELS / "breast-cancer" / version / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"input": x.astype(np.float32)})))


def capture_lines(version: str, x: np.ndarray, outputs_version: str | None = None) -> list[str]:
    lines = []
    for i in range(0, len(x), 4):
        rows = x[i : i + 4].astype(np.float32)
        outs = serve(outputs_version or version, rows)
        lines.append(json.dumps({
            "at": "2026-11-22T00:00:00.000Z", "request_id": f"r{i}", "model": "breast-cancer", "version": version,
            "inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": rows.reshape(-1).tolist()}],
            "outputs": [
                {"name": "label", "datatype": "INT64", "shape": list(outs["label"].shape), "data": outs["label"].reshape(-1).tolist()},
                {"name": "probabilities", "datatype": "FP32", "shape": list(outs["probabilities"].shape),
                 "data": outs["probabilities"].reshape(-1).tolist()},
            ],
        }))
    return lines


class Replay(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        _, x_train, x_test, _, _ = breast_cancer.data()
        cls.x = np.concatenate([x_test, x_train[:120]])

    def run_replay(self, lines: list[str]) -> dict:
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "capture-000000000000001-000001.jsonl").write_text("\n".join(lines) + "\n")
            return replay_capture.replay(replay_capture.read_capture(Path(d)), MODELS, 1e-4)

    def test_clean_capture_passes(self):
        for version in ["1", "2"]:
            report = self.run_replay(capture_lines(version, self.x))
            v = report["versions"][0]
            self.assertEqual(report["mismatches"], 0, json.dumps(v)[:2000])
            self.assertEqual(v["records"], (len(self.x) + 3) // 4)

    def test_a_preprocessing_mismatch_is_found_on_exactly_its_feature(self):
        bad = self.x.copy()
        bad[:, 3] /= 100.0  # serving sends "mean area" in the wrong unit
        v = self.run_replay(capture_lines("1", bad))["versions"][0]
        self.assertEqual(v["mismatched_features"], ["mean area"])
        self.assertEqual(v["mismatched_outputs"], [], "the model computed the same on what it was given")

    def test_an_output_mismatch_is_found(self):
        # Answers labelled version 2 that version 1 produced: serving and training disagree on the outputs.
        v = self.run_replay(capture_lines("2", self.x, outputs_version="1"))["versions"][0]
        self.assertIn("probabilities", v["mismatched_outputs"])
        self.assertEqual(v["mismatched_features"], [])

    def test_cli_exit_status(self):
        with tempfile.TemporaryDirectory() as d:
            f = Path(d) / "c.jsonl"
            f.write_text("\n".join(capture_lines("1", self.x)) + "\n")
            self.assertEqual(replay_capture.main(["--capture", str(f)]), 0)
            self.assertEqual(replay_capture.main(["--capture", str(Path(d) / "missing")]), 2)


def generic_capture(model: str, version: str, inputs: dict[str, tuple[str, np.ndarray]], rows: int = 4) -> list[str]:
    """Capture lines for any model: `inputs` maps input name to (datatype, values); outputs from ONNX Runtime."""
    sess = ort.InferenceSession(str(MODELS / model / version / "model.onnx"), providers=["CPUExecutionProvider"])
    out_types = {o.name: o.type for o in sess.get_outputs()}
    kinds = {"tensor(int64)": "INT64", "tensor(float)": "FP32", "tensor(float16)": "FP16"}
    n = len(next(iter(inputs.values()))[1])
    lines = []
    for i in range(0, n, rows):
        feeds = {k: v[i : i + rows] for k, (_, v) in inputs.items()}
        outs = dict(zip(out_types, sess.run(list(out_types), feeds)))
        lines.append(json.dumps({
            "at": "2026-11-22T00:00:00.000Z", "request_id": f"r{i}", "model": model, "version": version,
            "inputs": [{"name": k, "datatype": inputs[k][0], "shape": list(v.shape), "data": v.reshape(-1).tolist()}
                       for k, v in feeds.items()],
            "outputs": [{"name": k, "datatype": kinds[out_types[k]], "shape": list(v.shape), "data": v.reshape(-1).tolist()}
                        for k, v in outs.items()],
        }))
    return lines


class ReplayOtherDatatypes(unittest.TestCase):
    """The BYTES input and categorical baseline of `wine`, the FP16 tensors of `breast-cancer-fp16`."""

    def run_replay(self, lines: list[str]) -> dict:
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "capture-000000000000001-000001.jsonl").write_text("\n".join(lines) + "\n")
            return replay_capture.replay(replay_capture.read_capture(Path(d)), MODELS, 1e-4)

    def wine_rows(self):
        _, f_train, f_test, c_train, c_test, _, _ = wine.split()
        return np.concatenate([f_test, f_train]), np.concatenate([c_test, c_train])

    def test_wine_clean_capture_passes(self):
        f, c = self.wine_rows()
        report = self.run_replay(generic_capture("wine", "1", {"features": ("FP32", f), "color": ("BYTES", c)}))
        v = report["versions"][0]
        self.assertEqual(report["mismatches"], 0, json.dumps(v)[:2000])
        color = [x for x in v["features"] if x["feature"] == "color"][0]
        self.assertLess(color["psi"], 0.1)
        self.assertEqual(color["out_of_range_share"], 0.0)

    def test_wine_unseen_colours_are_found_on_the_colour_only(self):
        f, c = self.wine_rows()
        c = c.copy()
        c[::3] = "violet"  # serving sends a colour vocabulary training never saw
        v = self.run_replay(generic_capture("wine", "1", {"features": ("FP32", f), "color": ("BYTES", c)}))["versions"][0]
        self.assertEqual(v["mismatched_features"], ["color"])
        self.assertEqual(v["mismatched_outputs"], [], "the model computed the same on what it was given")

    def test_fp16_clean_capture_passes(self):
        _, x_train, x_test, _, _ = breast_cancer.data()
        x = np.concatenate([x_test, x_train[:120]]).astype(np.float16)
        report = self.run_replay(generic_capture("breast-cancer-fp16", "1", {"input": ("FP16", x)}))
        v = report["versions"][0]
        self.assertEqual(report["mismatches"], 0, json.dumps(v)[:2000])
        self.assertGreater(v["outputs"]["probabilities"]["max_abs_diff"], 0.0, "FP16 rounds: not bit-equal to FP32")


if __name__ == "__main__":
    unittest.main()
