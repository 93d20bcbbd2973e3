"""Calls a running gateway with NVIDIA's tritonclient, over gRPC and HTTP, exactly as a Triton user would.

Run by gateway/tests/clients.rs against a gateway it starts: `python tritonclient_check.py --grpc H:P --http H:P`.
Exits non-zero (with the failing assertion) if anything a Triton user relies on does not work.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

MODEL = "breast-cancer"


def rows() -> np.ndarray:
    # Three rows spread over the features' usual ranges (sizes, textures and ratios of cell nuclei).
    rng = np.random.default_rng(7)
    base = np.array([14.1, 19.3, 92.0, 655.0, 0.096, 0.104, 0.089, 0.049, 0.181, 0.063, 0.405, 1.217, 2.866, 40.3,
                     0.007, 0.025, 0.032, 0.012, 0.021, 0.004, 16.3, 25.7, 107.3, 880.6, 0.132, 0.254, 0.272, 0.115,
                     0.290, 0.084], dtype=np.float32)
    return (base * rng.uniform(0.7, 1.5, size=(3, 1))).astype(np.float32)


def check_grpc(url: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = grpcclient.InferenceServerClient(url=url)
    assert c.is_server_live() and c.is_server_ready(), "server live and ready"
    assert c.is_model_ready(MODEL), "model ready"
    assert c.is_model_ready(MODEL, "1"), "version 1 ready"
    meta = c.get_model_metadata(MODEL)
    assert meta.name == MODEL and [i.name for i in meta.inputs] == ["input"], meta
    assert list(meta.inputs[0].shape) == [-1, 30] and meta.inputs[0].datatype == "FP32", meta
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    outs = [grpcclient.InferRequestedOutput("label"), grpcclient.InferRequestedOutput("probabilities")]
    r = c.infer(MODEL, [inp], outputs=outs, request_id="tc-1")
    label, probs = r.as_numpy("label"), r.as_numpy("probabilities")
    assert label.shape == (3,) and label.dtype == np.int64, (label.shape, label.dtype)
    assert probs.shape == (3, 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5), probs
    resp = r.get_response()
    assert resp.model_version == "2" and resp.id == "tc-1", resp
    pinned = c.infer(MODEL, [inp], model_version="1")
    assert pinned.get_response().model_version == "1"
    try:
        c.infer("no-such-model", [inp])
        raise AssertionError("an unknown model must fail")
    except InferenceServerException as e:
        assert "NOT_FOUND" in str(e.status()) and "no-such-model" in e.message(), (e.status(), e.message())
    bad = grpcclient.InferInput("input", [3, 29], "FP32")
    bad.set_data_from_numpy(x[:, :29].copy())
    try:
        c.infer(MODEL, [bad])
        raise AssertionError("a wrong shape must fail")
    except InferenceServerException as e:
        assert "INVALID_ARGUMENT" in str(e.status()), (e.status(), e.message())
    return label, probs


def check_http(url: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = httpclient.InferenceServerClient(url=url)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready(MODEL)
    meta = c.get_model_metadata(MODEL)
    assert meta["name"] == MODEL and meta["inputs"][0]["shape"] == [-1, 30], meta
    # JSON tensors: the gateway does not implement Triton's binary-data extension of the HTTP protocol.
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    outs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in ("label", "probabilities")]
    r = c.infer(MODEL, [inp], outputs=outs)
    return r.as_numpy("label"), r.as_numpy("probabilities")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grpc", required=True)
    ap.add_argument("--http", required=True)
    a = ap.parse_args()
    x = rows()
    g_label, g_probs = check_grpc(a.grpc, x)
    h_label, h_probs = check_http(a.http, x)
    assert (g_label == h_label).all() and np.allclose(g_probs, h_probs), "gRPC and HTTP agree"
    print(f"tritonclient over gRPC and HTTP: ok (labels {g_label.tolist()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
