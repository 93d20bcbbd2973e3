#!/usr/bin/env python3
"""Writes the committed seed corpus under fuzz/corpus/<target>/: a handful of valid inputs (named ok-*) and
near-valid ones (named bad-*) per fuzz target, from the bundled models' manifests and golden examples where that
helps. Deterministic: rerun after a wire format change and commit the diff. Standard library only.

protobuf messages are encoded by hand (a few lines of the wire format), so no protoc or protobuf package is
needed; fuzz/tests/seeds.rs checks that every ok-* seed decodes with the gateway's real decoders.
"""

import json
import os
import shutil
import struct
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"


def compact(v) -> bytes:
    return json.dumps(v, separators=(",", ":")).encode()


def pretty(v) -> bytes:
    return json.dumps(v, indent=1).encode() + b"\n"


# --- protobuf wire format ---------------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 values are ten bytes of two's complement
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field: string, bytes, embedded message or packed repeated scalars."""
    return key(field, 2) + varint(len(payload)) + payload


def string(field: int, s: str) -> bytes:
    return ld(field, s.encode())


def packed_varints(field: int, values) -> bytes:
    return ld(field, b"".join(varint(int(v)) for v in values))


def packed_fixed(field: int, fmt: str, values) -> bytes:
    return ld(field, b"".join(struct.pack("<" + fmt, v) for v in values))


def param(k: str, value: bytes) -> bytes:
    """One entry of a map<string, InferParameter> (field 4 of the request and of each input)."""
    return ld(4, string(1, k) + ld(2, value))


CONTENTS = {  # datatype -> (field of InferTensorContents, encoder)
    "BOOL": lambda v: packed_varints(1, v),
    "INT8": lambda v: packed_varints(2, v),
    "INT16": lambda v: packed_varints(2, v),
    "INT32": lambda v: packed_varints(2, v),
    "INT64": lambda v: packed_varints(3, v),
    "UINT8": lambda v: packed_varints(4, v),
    "UINT16": lambda v: packed_varints(4, v),
    "UINT32": lambda v: packed_varints(4, v),
    "UINT64": lambda v: packed_varints(5, v),
    "FP32": lambda v: packed_fixed(6, "f", v),
    "FP64": lambda v: packed_fixed(7, "d", v),
}

RAW = {"BOOL": "?", "UINT8": "B", "INT8": "b", "UINT16": "H", "INT16": "h", "UINT32": "I", "INT32": "i",
       "UINT64": "Q", "INT64": "q", "FP16": "e", "FP32": "f", "FP64": "d"}


def infer_input(name: str, datatype: str, shape, values=None, params=b"") -> bytes:
    msg = string(1, name) + string(2, datatype) + packed_varints(3, shape) + params
    if values is not None:
        msg += ld(5, CONTENTS[datatype](values))
    return msg


def infer_request(inputs, raw=(), model="m", version="1", rid="42", outputs=(), params=b"") -> bytes:
    msg = string(1, model) + string(2, version) + string(3, rid) + params
    msg += b"".join(ld(5, i) for i in inputs)
    msg += b"".join(ld(6, string(1, o)) for o in outputs)
    msg += b"".join(ld(7, r) for r in raw)
    return msg


def raw(datatype: str, values) -> bytes:
    return b"".join(struct.pack("<" + RAW[datatype], v) for v in values)


# --- the corpus -------------------------------------------------------------------------------------------------


def manifests():
    out = {}
    for model in ("breast-cancer", "diabetes", "wine", "breast-cancer-fp16"):
        out[model] = json.loads((ROOT / "models" / model / "1" / "manifest.json").read_text())
    return out


def golden_request(manifest, case=0):
    by_name = {i["name"]: i for i in manifest["inputs"]}
    return {
        "id": "golden",
        "inputs": [
            {"name": t["name"], "shape": t["shape"], "datatype": by_name[t["name"]]["datatype"], "data": t["data"]}
            for t in manifest["golden"][case]["inputs"]
        ],
    }


def golden_response(manifest, case=0):
    by_name = {o["name"]: o for o in manifest["outputs"]}
    return {
        "model_name": manifest["name"],
        "model_version": manifest["version"],
        "outputs": [
            {"name": t["name"], "datatype": by_name[t["name"]]["datatype"], "shape": t["shape"], "data": t["data"]}
            for t in manifest["golden"][case]["outputs"]
        ],
    }


def json_tensor_seeds(kind: str, m):
    """Requests (`inputs`) or responses (`outputs`): the same tensor objects."""
    member = "inputs" if kind == "request" else "outputs"

    def body(*tensors, **extra):
        return compact({**extra, member: list(tensors)})

    def t(name, datatype, shape, data, **extra):
        return {"name": name, "datatype": datatype, "shape": shape, "data": data, **extra}

    seeds = {
        "ok-fp32.json": body(t("input", "FP32", [1, 4], [1.0, 2.5, -3, 4e2]), id="1"),
        # data before datatype and shape: the raw (second pass) path; nested rows.
        "ok-data-first.json": compact(
            {member: [{"data": [[1, 2], [3, -4]], "name": "x", "shape": [2, 2], "datatype": "INT64"}]}
        ),
        "ok-every-type.json": body(
            t("b", "BOOL", [3], [True, False, True]),
            t("u8", "UINT8", [2], [0, 255]),
            t("i8", "INT8", [2], [-128, 127]),
            t("u16", "UINT16", [1], [65535]),
            t("i16", "INT16", [1], [-32768]),
            t("u32", "UINT32", [1], [4294967295]),
            t("i32", "INT32", [1, 1], [[-2147483648]]),
            t("u64", "UINT64", [1], [18446744073709551615]),
            t("f64", "FP64", [2], [1.7976931348623157e308, -5e-324], parameters={"binary_data": False}),
            parameters={"priority": 1},
        ),
        "ok-empty-tensor.json": body(t("e", "FP32", [0, 30], [])),
        "bad-shape-count.json": body(t("input", "FP32", [2, 2], [1, 2, 3])),
        "bad-negative-dim.json": body(t("input", "FP32", [-1, 2], [1, 2])),
        "bad-datatype.json": body(t("input", "BF16", [1], [1.0])),
        "ok-half-and-strings.json": body(t("h", "FP16", [2], [1.5, -2.0]), t("s", "BYTES", [2, 1], [["pale"], ["deep"]])),
        "bad-int-range.json": body(t("x", "UINT8", [2], [256, -1])),
        "bad-duplicate-field.json": b'{"%s":[{"name":"a","name":"b","shape":[1],"datatype":"INT32","data":[1]}]}'
        % member.encode(),
        "bad-truncated.json": body(t("input", "FP32", [1, 4], [1.0, 2.5, -3, 4e2]))[:-7],
    }
    if kind == "request":
        seeds["ok-breast-cancer.json"] = compact(golden_request(m["breast-cancer"], 2))
        seeds["ok-diabetes.json"] = compact(golden_request(m["diabetes"], 1) | {"outputs": [{"name": "progression"}]})
        seeds["bad-empty-inputs.json"] = b'{"inputs":[]}'
    else:
        seeds["ok-breast-cancer.json"] = compact(golden_response(m["breast-cancer"], 1))
        seeds["ok-diabetes.json"] = compact(golden_response(m["diabetes"], 1))
    return seeds


def grpc_seeds(m):
    bc = m["breast-cancer"]["golden"][0]["inputs"][0]
    dia = m["diabetes"]["golden"][1]["inputs"]
    return {
        "ok-typed-fp32.pb": infer_request(
            [infer_input("input", "FP32", bc["shape"], bc["data"])], model="breast-cancer", outputs=["label"]
        ),
        "ok-raw-diabetes.pb": infer_request(
            [infer_input("features", "FP64", dia[0]["shape"]), infer_input("sex", "INT64", dia[1]["shape"])],
            raw=[raw("FP64", dia[0]["data"]), raw("INT64", dia[1]["data"])],
            model="diabetes",
        ),
        "ok-typed-every-type.pb": infer_request(
            [
                infer_input("b", "BOOL", [2], [1, 0]),
                infer_input("i8", "INT8", [2], [-128, 127], params=param("p", varint(1 << 3) + varint(1))),
                infer_input("i16", "INT16", [1], [-3]),
                infer_input("i32", "INT32", [1], [-2147483648]),
                infer_input("i64", "INT64", [1, 1], [-(2**63)]),
                infer_input("u8", "UINT8", [1], [255]),
                infer_input("u16", "UINT16", [1], [65535]),
                infer_input("u32", "UINT32", [1], [4294967295]),
                infer_input("u64", "UINT64", [1], [2**64 - 1]),
                infer_input("f64", "FP64", [2], [0.5, -1e300]),
            ],
            params=param("sequence_id", key(2, 0) + varint(7)) + param("tag", string(3, "x")),
        ),
        "ok-raw-every-type.pb": infer_request(
            [infer_input(n, d, [2]) for n, d in [("b", "BOOL"), ("u16", "UINT16"), ("i32", "INT32"), ("f32", "FP32")]],
            raw=[raw("BOOL", [True, False]), raw("UINT16", [1, 65535]), raw("INT32", [-1, 2]), raw("FP32", [0.5, 2])],
        ),
        "bad-raw-length.pb": infer_request([infer_input("x", "FP32", [1, 3])], raw=[raw("FP32", [1.0, 2.0])]),
        "bad-raw-count.pb": infer_request(
            [infer_input("x", "INT32", [1]), infer_input("y", "INT32", [1])], raw=[raw("INT32", [1])]
        ),
        "bad-both-contents.pb": infer_request([infer_input("x", "INT32", [1], [5])], raw=[raw("INT32", [5])]),
        "bad-shape-count.pb": infer_request([infer_input("x", "FP64", [3], [1.0, 2.0])]),
        "bad-datatype.pb": infer_request([infer_input("x", "BYTES", [1])]),
        "bad-truncated.pb": infer_request([infer_input("input", "FP32", bc["shape"], bc["data"])])[:-5],
    }


def manifest_seeds(m):
    def renamed(man):
        return {**man, "name": "m", "version": "1"}

    dia = renamed(m["diabetes"])
    bc = renamed(m["breast-cancer"])

    def broken(**changes):
        return compact({**dia, **changes})

    first_input = dia["inputs"][0]
    return {
        "ok-diabetes.json": compact(dia),
        "ok-breast-cancer.json": compact(bc),
        "ok-minimal.json": compact(
            {k: v for k, v in dia.items() if k not in ("training", "description")}
            | {"inputs": [{k: v for k, v in i.items() if k != "features"} for i in dia["inputs"]]}
            | {"golden": dia["golden"][:1]}
        ),
        "bad-name.json": compact(m["diabetes"]),  # checked against model "m"
        "bad-trained-at.json": broken(trained_at="2026-13-45T25:61:00+99:00"),
        "bad-batch-dim.json": broken(outputs=[{"name": "progression", "datatype": "FP64", "shape": [1, 1]}]),
        "bad-bins.json": broken(
            inputs=[
                {
                    **first_input,
                    "features": [
                        {**f, "bin_edges": f["bin_edges"][::-1], "bin_counts": f["bin_counts"][:2]}
                        for f in first_input["features"][:3]
                    ],
                }
            ]
        ),
        "bad-duplicate-input.json": broken(inputs=[first_input, first_input]),
        "bad-schema.json": broken(schema_version=2, inputs=[], outputs=[]),
    }


def state_seeds():
    policy = {"interval_secs": 30.0, "window_secs": 60.0, "min_requests": 100, "weights": [1, 5, 25, 50],
              "threshold": 2, "require_approval": False, "checks": {"min_success_rate": 99.0, "max_p99_ms": 250.0}}
    analysis = {
        "outcome": "pass", "reason": "every check passed", "interval_requests": 812, "window_requests": 1630,
        "stable_window_requests": 30211,
        "checks": [
            {"check": "success_rate", "status": "pass", "value": 100.0, "threshold": 99.0, "detail": "0 of 1630"},
            {"check": "drift", "status": "no_data", "value": None, "threshold": 0.2, "detail": "too few"},
        ],
    }
    rollout = {
        "canary": 2, "stable": 1, "policy": policy, "generation": 3, "phase": "progressing", "step": 1,
        "failed_intervals": 0, "analyses": 4, "started_at": "2026-11-22T10:00:00Z",
        "updated_at": "2026-11-22T10:02:00Z", "mirroring": True, "message": "advanced to 5%",
        "last_analysis": analysis,
    }
    event = {"at": "2026-11-22T10:00:00Z", "kind": "canary_started", "message": "canary 2 at 1%", "stable": 1,
             "canary": 2, "weight_percent": 1.0, "data": {"by": "rollout"}}
    full = {
        "schema": 1,
        "models": {
            "breast-cancer": {
                "routing": {"stable": 1, "canary": {"version": 2, "weight": 500},
                            "shadow": {"version": 3, "share": 1000}},
                "events": [event, {**event, "kind": "version_loaded", "canary": None, "weight_percent": None,
                                   "message": "version 3 ready"}],
                "rollout": rollout,
            },
            "diabetes": {"routing": {"stable": None, "canary": None}},
        },
    }
    done = {**rollout, "phase": "rolled_back", "policy": {"step_weight": 10, "max_weight": 50, "unknown": 1},
            "last_analysis": None}
    return {
        "ok-full.json": pretty(full),
        "ok-empty.json": b'{"schema":1,"models":{}}',
        "ok-rolled-back.json": compact(
            {"schema": 1, "models": {"m": {"routing": {"stable": 1, "canary": None}, "rollout": done}}}
        ),
        "bad-schema.json": b'{"schema":2,"models":{}}',
        "bad-phase.json": compact(
            {"schema": 1, "models": {"m": {"routing": {"stable": 1, "canary": None}, "rollout": {**rollout,
                                                                                               "phase": "dancing"}}}}
        ),
        "bad-weight.json": b'{"schema":1,"models":{"m":{"routing":{"stable":1,"canary":{"version":2,"weight":-5}}}}}',
        "bad-truncated.json": pretty(full)[:300],
    }


ROUTES = ["canary", "weight", "shadow", "stable", "rollout", "note"]


def admin_seeds():
    def body(route, text: bytes) -> bytes:
        return bytes([ROUTES.index(route)]) + text

    return {
        "ok-canary": body("canary", b'{"version":"2","weight":5}'),
        "ok-weight": body("weight", b'{"weight":25.5}'),
        "ok-shadow": body("shadow", b'{"version":2,"percent":10}'),
        "ok-stable": body("stable", b'{"version":"1","reason":"back to 1 after the incident"}'),
        "ok-rollout": body("rollout", b'{"version":3,"policy":{"weights":[1,5,25],"checks":{"max_p99_ms":200}}}'),
        "ok-note": body("note", b'{"reason":"p99 too high"}'),
        "ok-note-alias": body("note", b'{"note":"approved by on-call"}'),
        "ok-blank": body("note", b" \n"),
        "bad-weight-range": body("canary", b'{"version":"2","weight":150}'),
        "bad-version": body("stable", b'{"version":"0x2"}'),
        "bad-unknown-field": body("weight", b'{"weight":5,"extra":true}'),
        "bad-missing-field": body("shadow", b"{}"),
    }


def lengths(strings) -> bytes:
    return b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in strings)


def binary_seeds(m):
    """Binary tensor requests, framed as the fuzz target reads them: a 4-byte little-endian JSON header length,
    then the body (the JSON header and the raw tensors after it)."""

    def framed(header, tail: bytes, length=None) -> bytes:
        h = compact(header)
        return struct.pack("<I", len(h) if length is None else length) + h + tail

    def binary_golden(manifest, case=0):
        req = golden_request(manifest, case)
        tail = b""
        for t in req["inputs"]:
            values = t.pop("data")
            chunk = lengths(values) if t["datatype"] == "BYTES" else raw(t["datatype"], values)
            t["parameters"] = {"binary_data_size": len(chunk)}
            tail += chunk
        req["outputs"] = [{"name": o["name"], "parameters": {"binary_data": True}} for o in manifest["outputs"]]
        return req, tail

    seeds = {}
    for model in ("breast-cancer", "wine", "breast-cancer-fp16"):
        req, tail = binary_golden(m[model], 1 if len(m[model]["golden"]) > 1 else 0)
        seeds[f"ok-{model}"] = framed(req, tail)
    mixed = golden_request(m["wine"], 0)
    mixed["inputs"][1]["parameters"] = {"binary_data_size": len(lengths(mixed["inputs"][1]["data"]))}
    tail = lengths(mixed["inputs"][1].pop("data"))
    seeds["ok-mixed-json-and-binary"] = framed(mixed, tail)
    req, tail = binary_golden(m["breast-cancer"])
    seeds["bad-short"] = framed(req, tail[:-1])
    seeds["bad-long"] = framed(req, tail + b"\0")
    seeds["bad-header-past-end"] = framed(req, tail, length=10**6)
    both = golden_request(m["breast-cancer"])
    both["inputs"][0]["parameters"] = {"binary_data_size": 120}
    seeds["bad-data-and-binary"] = framed(both, b"\0" * 120)
    req, tail = binary_golden(m["wine"])
    seeds["bad-bytes-length-past-end"] = framed(req, tail[:-9] + struct.pack("<I", 10**6) + tail[-5:])
    return seeds


def main():
    m = manifests()
    targets = {
        "json_request": json_tensor_seeds("request", m),
        "binary_request": binary_seeds(m),
        "json_response": json_tensor_seeds("response", m),
        "grpc_request": grpc_seeds(m),
        "manifest": manifest_seeds(m),
        "state_file": state_seeds(),
        "admin_body": admin_seeds(),
    }
    for target, seeds in targets.items():
        d = CORPUS / target
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for name, data in seeds.items():
            (d / name).write_bytes(data)
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    print(f"wrote {sum(map(len, targets.values()))} seeds for {len(targets)} targets, {total} bytes, in {CORPUS}")


if __name__ == "__main__":
    main()
