"""Train/serve skew replay: run a capture log from the gateway through the training-side pipeline.

For every captured request it recomputes the outputs with the scikit-learn model that produced the ONNX file
(retrained deterministically by the model's training script) and compares them with what the gateway answered;
and it compares each input feature's captured values with the training baseline in the version's manifest
(population stability index on the baseline bins, share of values outside the training range). A feature that
serving computes differently from training (a unit, a scaling, a column order) shows up as drift on that feature;
a model or runtime that computes differently shows up as output mismatches.

Run (with the training requirements installed, e.g. `make models` once):

    python models/train/replay_capture.py --capture <capture dir or file> [--json report.json]

Exit status 0 when nothing mismatches, 1 when something does, 2 on bad input.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Model name in the repository -> training script module.
TRAINING = {
    "breast-cancer": "breast_cancer",
    "diabetes": "diabetes",
    "wine": "wine",
    "breast-cancer-fp16": "breast_cancer_fp16",
}
PSI_LIMIT = 0.25
OUT_OF_RANGE_LIMIT = 0.05
MIN_ROWS = 50

DTYPES = {
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "INT64": np.int64,
    "INT32": np.int32,
    "BOOL": np.bool_,
    "BYTES": object,  # JSON strings, as in the v2 JSON protocol
}


def read_capture(path: Path) -> list[dict]:
    files = sorted(path.glob("capture-*.jsonl")) if path.is_dir() else [path]
    records = []
    for f in files:
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise SystemExit(f"{f}:{n}: not a JSON line: {e}")
    return records


def tensor(t: dict) -> np.ndarray:
    return np.asarray(t["data"], dtype=DTYPES.get(t["datatype"], np.float64)).reshape(t["shape"])


def psi(expected: np.ndarray, observed: np.ndarray) -> float:
    p = np.maximum(expected / max(expected.sum(), 1), 1e-4)
    q = np.maximum(observed / max(observed.sum(), 1), 1e-4)
    return float(np.sum((q - p) * np.log(q / p)))


def replay(records: list[dict], models_dir: Path, tolerance: float) -> dict:
    by_version: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        by_version[(r["model"], r["version"])].append(r)
    report = {"records": len(records), "versions": [], "mismatches": 0}
    trained: dict[str, dict] = {}
    for (model, version), recs in sorted(by_version.items()):
        if model not in TRAINING:
            report["versions"].append({"model": model, "version": version, "skipped": "no training script"})
            continue
        module = importlib.import_module(TRAINING[model])
        if model not in trained:
            trained[model] = module.train()
        if version not in trained[model]:
            report["versions"].append({"model": model, "version": version, "skipped": "no such trained version"})
            continue
        manifest = json.loads((models_dir / model / version / "manifest.json").read_text())
        sk = trained[model][version]
        # A model that computes in lower precision than it was trained in (FP16) declares the difference it allows.
        tol = max(tolerance, getattr(module, "REPLAY_TOLERANCE", 0.0))
        outputs: dict[str, dict] = defaultdict(lambda: {"compared": 0, "mismatched": 0, "max_abs_diff": 0.0})
        columns: dict[tuple[str, int], list[float]] = defaultdict(list)
        for r in recs:
            inputs = {t["name"]: tensor(t) for t in r["inputs"]}
            expected = module.predict(sk, inputs)
            for t in r["outputs"]:
                got, want = tensor(t), expected[t["name"]].reshape(tensor(t).shape)
                o = outputs[t["name"]]
                o["compared"] += got.size
                if np.issubdtype(want.dtype, np.integer) or want.dtype == object:
                    o["mismatched"] += int(np.sum(got != want))
                else:
                    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
                    o["mismatched"] += int(np.sum(diff > tol * (1 + np.abs(want.astype(np.float64)))))
                    o["max_abs_diff"] = max(o["max_abs_diff"], float(diff.max(initial=0.0)))
            for spec in manifest["inputs"]:
                rows = inputs[spec["name"]].reshape(inputs[spec["name"]].shape[0], -1)
                for i in range(len(spec.get("features", []))):
                    columns[(spec["name"], i)].extend(rows[:, i].tolist())
        features = []
        for spec in manifest["inputs"]:
            for i, f in enumerate(spec.get("features", [])):
                if "categories" in f:
                    # Categorical: one bin per training category, plus one for categories training never saw
                    # (expected count 0); an unseen category counts as outside the training range.
                    vals = [str(v) for v in columns[(spec["name"], i)]]
                    index = {c: k for k, c in enumerate(f["categories"])}
                    idx = np.asarray([index.get(v, len(index)) for v in vals], dtype=np.int64)
                    expected = np.asarray(list(f["category_counts"]) + [0], dtype=np.float64)
                    observed = np.bincount(idx, minlength=len(expected))
                    value = psi(expected, observed.astype(np.float64))
                    outside = float(np.mean(idx == len(index))) if len(vals) else 0.0
                else:
                    vals = np.asarray(columns[(spec["name"], i)], dtype=np.float64)
                    idx = np.searchsorted(np.asarray(f["bin_edges"]), vals, side="left")
                    observed = np.bincount(idx, minlength=len(f["bin_counts"]))
                    value = psi(np.asarray(f["bin_counts"], dtype=np.float64), observed.astype(np.float64))
                    outside = float(np.mean((vals < f["min"]) | (vals > f["max"]))) if len(vals) else 0.0
                flagged = len(vals) >= MIN_ROWS and (value > PSI_LIMIT or outside > OUT_OF_RANGE_LIMIT)
                features.append({"input": spec["name"], "feature": f["name"], "rows": len(vals), "psi": value,
                                 "out_of_range_share": outside, "mismatch": flagged})
        mismatched_outputs = [n for n, o in outputs.items() if o["mismatched"]]
        mismatched_features = [f["feature"] for f in features if f["mismatch"]]
        report["mismatches"] += len(mismatched_outputs) + len(mismatched_features)
        report["versions"].append({
            "model": model, "version": version, "records": len(recs), "outputs": dict(outputs), "features": features,
            "mismatched_outputs": mismatched_outputs, "mismatched_features": mismatched_features,
        })
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capture", required=True, type=Path, help="capture directory or one capture-*.jsonl file")
    ap.add_argument("--models", type=Path, default=HERE.parent, help="the model repository")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="relative tolerance for numeric outputs")
    ap.add_argument("--json", type=Path, help="also write the full report here")
    a = ap.parse_args(argv)
    if not a.capture.exists():
        print(f"{a.capture} does not exist", file=sys.stderr)
        return 2
    report = replay(read_capture(a.capture), a.models, a.tolerance)
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))
    for v in report["versions"]:
        if "skipped" in v:
            print(f"{v['model']}/{v['version']}: skipped ({v['skipped']})")
            continue
        print(f"{v['model']}/{v['version']}: {v['records']} records")
        for name, o in v["outputs"].items():
            print(f"  output {name}: {o['mismatched']} of {o['compared']} values differ (max abs diff {o['max_abs_diff']:.3g})")
        for f in v["features"]:
            if f["mismatch"]:
                print(f"  feature {f['feature']}: PSI {f['psi']:.2f}, {100 * f['out_of_range_share']:.0f} % outside the training range")
    print(f"{report['records']} records, {report['mismatches']} mismatches")
    return 1 if report["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
