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


if __name__ == "__main__":
    unittest.main()
