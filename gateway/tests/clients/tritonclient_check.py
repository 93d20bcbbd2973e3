"""Calls a running gateway with NVIDIA's tritonclient, over HTTP and gRPC, exactly as a Triton user would.

Run by gateway/tests/clients.rs against a gateway it starts:

    python tritonclient_check.py --http H:P --grpc H:P --models <repository>

with the gateway's admin token in the environment variable GATEWAY_ADMIN_TOKEN (for load/unload). Every version in
the model repository on disk that the gateway reports ready is called explicitly (model_version=...) with each of
its golden examples, over every way tritonclient can carry tensors: at its defaults (binary tensors both ways), binary
in with JSON out, JSON in with binary out, JSON both ways, no outputs named, gzip and deflate bodies, and gRPC. Then
the Triton extensions tritonclient exposes: model configuration, statistics, the repository index, and model
load/unload, which needs the admin bearer token.

Each check prints PASS or FAIL with the reason; the run goes on after a failure so one run shows the whole picture.
The last line is "tritonclient over gRPC and HTTP: ok" only when everything passed (the exit status says so too).
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import zlib
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from golden import TRITON_CONFIG_TYPES, Example, Spec, Version, array, check_outputs, load_repository
from report import Report, fail_fast_if

OK_LINE = "tritonclient over gRPC and HTTP: ok"
TOKEN_ENV = "GATEWAY_ADMIN_TOKEN"
# The gateway compresses answers of at least 1 KiB only; golden examples repeated this many times give answers well
# past that, so the compression checks really get compressed bodies back.
COMPRESSION_TILES = 64
# Requests sent between two readings of the statistics.
STATS_REQUESTS = 5
# The model the load/unload checks take down and bring back: a single-version model nothing else here depends on.
LIFECYCLE_MODEL = "diabetes"


# ---------------------------------------------------------------------------------------------------------------
# Inference helpers


def http_inputs(ex: Example, binary: bool) -> list[httpclient.InferInput]:
    inputs = []
    for t in ex.inputs:
        i = httpclient.InferInput(t.name, list(t.value.shape), t.datatype)
        if binary:
            i.set_data_from_numpy(t.value)  # tritonclient's default: binary_data=True
        else:
            i.set_data_from_numpy(t.value, binary_data=False)
        inputs.append(i)
    return inputs


def http_outputs(v: Version, binary: bool | None) -> list[httpclient.InferRequestedOutput] | None:
    """Every declared output, requested binary (tritonclient's default) or as JSON; None names no outputs at all."""
    if binary is None:
        return None
    if binary:
        return [httpclient.InferRequestedOutput(s.name) for s in v.outputs]
    return [httpclient.InferRequestedOutput(s.name, binary_data=False) for s in v.outputs]


def expect_http_answer(r: httpclient.InferResult, v: Version, ex: Example, binary_out: bool, what: str) -> None:
    """The answer comes from the version asked for, in the format asked for, with the golden values."""
    resp = r.get_response()
    assert resp.get("model_name") == v.model and resp.get("model_version") == v.version, \
        f"{what}: answered by {resp.get('model_name')} v{resp.get('model_version')}"
    for o in resp.get("outputs", []):
        binary = "binary_data_size" in (o.get("parameters") or {})
        assert binary == binary_out and ("data" in o) != binary_out, \
            f"{what}: output '{o.get('name')}' came {'binary' if binary else 'as JSON'}, " \
            f"expected {'binary' if binary_out else 'JSON'}"
    check_outputs(ex, {s.name: r.as_numpy(s.name) for s in v.outputs}, what)


def http_golden(c: httpclient.InferenceServerClient, v: Version, *, binary_in: bool, binary_out: bool | None,
                tiles: int = 1, **kwargs: object) -> None:
    """Every golden example of `v` over HTTP. binary_out None names no outputs, which asks for all of them binary
    (tritonclient then sets the request's binary_data_output)."""
    for ex in v.examples:
        ex = ex.tiled(tiles) if tiles > 1 else ex
        r = c.infer(v.model, http_inputs(ex, binary_in), model_version=v.version,
                    outputs=http_outputs(v, binary_out), **kwargs)
        expect_http_answer(r, v, ex, binary_out is not False, f"{v} HTTP")


def grpc_inputs(ex: Example) -> list[grpcclient.InferInput]:
    inputs = []
    for t in ex.inputs:
        i = grpcclient.InferInput(t.name, list(t.value.shape), t.datatype)
        i.set_data_from_numpy(t.value)  # raw_input_contents, as tritonclient always sends over gRPC
        inputs.append(i)
    return inputs


def grpc_golden(c: grpcclient.InferenceServerClient, v: Version, *, name_outputs: bool) -> None:
    for ex in v.examples:
        outs = [grpcclient.InferRequestedOutput(s.name) for s in v.outputs] if name_outputs else None
        r = c.infer(v.model, grpc_inputs(ex), model_version=v.version, outputs=outs)
        resp = r.get_response()
        assert resp.model_name == v.model and resp.model_version == v.version, \
            f"{v} gRPC: answered by {resp.model_name} v{resp.model_version}"
        check_outputs(ex, {s.name: r.as_numpy(s.name) for s in v.outputs}, f"{v} gRPC")


def largest_example(v: Version) -> Example:
    return max(v.examples, key=lambda e: e.rows)


# ---------------------------------------------------------------------------------------------------------------
# Compression as it travels: tritonclient decompresses answers itself and does not say whether they were
# compressed, so one raw request shows the gateway really inflates the body and really compresses the answer.


def json_request(ex: Example) -> bytes:
    def data(a: np.ndarray) -> list:
        flat = a.reshape(-1).tolist()
        return [x.decode("utf-8") if isinstance(x, bytes) else x for x in flat]

    return json.dumps({"inputs": [{"name": t.name, "shape": list(t.value.shape), "datatype": t.datatype,
                                   "data": data(t.value)} for t in ex.inputs]}).encode()


def compressed_on_the_wire(addr: str, v: Version, encoding: str) -> None:
    ex = largest_example(v).tiled(COMPRESSION_TILES)
    body = json_request(ex)
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)  # HTTP "deflate" is zlib-wrapped
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", f"/v2/models/{v.model}/versions/{v.version}/infer", body=packed,
                     headers={"Content-Type": "application/json", "Content-Encoding": encoding,
                              "Accept-Encoding": encoding})
        resp = conn.getresponse()
        raw = resp.read()
        assert resp.status == 200, f"{encoding} request: HTTP {resp.status}: {raw[:300]!r}"
        got_encoding = resp.getheader("Content-Encoding")
        assert got_encoding == encoding, f"a {len(raw)}-byte answer came with Content-Encoding {got_encoding!r}"
    finally:
        conn.close()
    answer = json.loads(gzip.decompress(raw) if encoding == "gzip" else zlib.decompress(raw))
    types = {s.name: s.datatype for s in v.outputs}
    got = {o["name"]: array(types[o["name"]], o["shape"], o["data"]) for o in answer["outputs"]}
    check_outputs(ex, got, f"{v} raw HTTP {encoding}")


# ---------------------------------------------------------------------------------------------------------------
# Metadata and model configuration


def check_metadata(h: httpclient.InferenceServerClient, g: grpcclient.InferenceServerClient, v: Version) -> None:
    def tensors(ts: list[dict]) -> list[tuple]:
        return [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in ts]

    want_in = [(s.name, s.datatype, list(s.shape)) for s in v.inputs]
    want_out = [(s.name, s.datatype, list(s.shape)) for s in v.outputs]
    hm = h.get_model_metadata(v.model, v.version)
    assert hm["name"] == v.model and v.version in hm["versions"], hm
    assert tensors(hm["inputs"]) == want_in and tensors(hm["outputs"]) == want_out, hm
    gm = g.get_model_metadata(v.model, v.version)
    g_in = [(t.name, t.datatype, list(t.shape)) for t in gm.inputs]
    g_out = [(t.name, t.datatype, list(t.shape)) for t in gm.outputs]
    assert gm.name == v.model and v.version in gm.versions, gm
    assert g_in == want_in and g_out == want_out, gm


def grpc_config_as_json(cfg: model_config_pb2.ModelConfig) -> dict:
    """The fields checked here, in the shape Triton's HTTP endpoint returns them (enum names, integer dims)."""

    def io(t: object) -> dict:
        d = {"name": t.name, "data_type": model_config_pb2.DataType.Name(t.data_type), "dims": list(t.dims)}
        if t.HasField("reshape"):
            d["reshape"] = {"shape": list(t.reshape.shape)}
        return d

    return {"name": cfg.name, "platform": cfg.platform, "max_batch_size": cfg.max_batch_size,
            "input": [io(t) for t in cfg.input], "output": [io(t) for t in cfg.output]}


def expect_config(cfg: dict, v: Version, what: str) -> None:
    """Triton's model configuration for an ONNX model that batches along its first dimension."""
    assert cfg.get("name") == v.model, f"{what}: name {cfg.get('name')!r}"
    assert cfg.get("platform") == "onnxruntime_onnx", f"{what}: platform {cfg.get('platform')!r}"
    mbs = cfg.get("max_batch_size")
    # Every bundled model takes a batch (-1) first, so Triton would report batching: max_batch_size > 0 and the
    # batch dimension left out of every dims. The exact value is the gateway's max_batch_rows, a deployment choice.
    assert isinstance(mbs, int) and mbs > 0, f"{what}: max_batch_size {mbs!r}, expected a positive integer"
    for key, specs in (("input", v.inputs), ("output", v.outputs)):
        entries = cfg.get(key)
        assert isinstance(entries, list), f"{what}: no '{key}' list in {sorted(cfg)}"
        by_name = {e.get("name"): e for e in entries}
        assert sorted(by_name) == sorted(s.name for s in specs), \
            f"{what}: {key} names {sorted(by_name)}, expected {sorted(s.name for s in specs)}"
        for s in specs:
            expect_config_tensor(by_name[s.name], s, f"{what}: {key} '{s.name}'")


def expect_config_tensor(e: dict, s: Spec, what: str) -> None:
    want_type = TRITON_CONFIG_TYPES[s.datatype]
    assert e.get("data_type") == want_type, f"{what}: data_type {e.get('data_type')!r}, expected {want_type}"
    dims = e.get("dims")
    # Triton writes dims as JSON numbers over HTTP (its ModelConfigToJson turns protobuf's int64 strings back).
    assert isinstance(dims, list) and all(isinstance(d, int) for d in dims), f"{what}: dims {dims!r}, not integers"
    want = list(s.shape[1:])
    if want:
        assert dims == want, f"{what}: dims {dims}, expected {want} (the shape without its batch dimension)"
    else:
        # A tensor that is only the batch dimension: Triton spells it dims [1] with an empty reshape (its
        # validation refuses empty dims); an empty dims list reads the same to a client, so both are accepted.
        triton_way = dims == [1] and (e.get("reshape") or {}).get("shape") == []
        assert triton_way or dims == [], f"{what}: dims {dims} reshape {e.get('reshape')}, expected " \
                                         f"dims [1] with reshape {{shape: []}} (or [])"


# ---------------------------------------------------------------------------------------------------------------
# The Triton extensions, the same way over either protocol, so that each protocol passes or fails on its own.


class Http:
    name, refused = "HTTP", "403"

    def __init__(self, c: httpclient.InferenceServerClient) -> None:
        self.c = c

    def config(self, model: str, version: str = "") -> dict:
        return self.c.get_model_config(model, version)

    def stats(self, v: Version) -> dict:
        entries = [m for m in self.c.get_inference_statistics(v.model, v.version)["model_stats"]
                   if m["name"] == v.model and m["version"] == v.version]
        assert len(entries) == 1, f"{v}: {len(entries)} statistics entries"
        return normalise_http_stats(entries[0])

    def stats_listed(self, model: str = "") -> set[tuple[str, str]]:
        return {(m["name"], m["version"]) for m in self.c.get_inference_statistics(model)["model_stats"]}

    def index(self) -> dict[tuple[str, str], str]:
        return {(m["name"], m.get("version", "")): m.get("state", "") for m in self.c.get_model_repository_index()}

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def load(self, model: str, headers: dict[str, str] | None = None) -> None:
        self.c.load_model(model, headers=headers)

    def unload(self, model: str, headers: dict[str, str] | None = None) -> None:
        self.c.unload_model(model, headers=headers)

    def infer(self, v: Version, ex: Example) -> None:
        r = self.c.infer(v.model, http_inputs(ex, True), model_version=v.version, outputs=http_outputs(v, True))
        expect_http_answer(r, v, ex, True, f"{v} HTTP")


class Grpc:
    name, refused = "gRPC", "PERMISSION_DENIED"

    def __init__(self, c: grpcclient.InferenceServerClient) -> None:
        self.c = c

    def config(self, model: str, version: str = "") -> dict:
        return grpc_config_as_json(self.c.get_model_config(model, version).config)

    def stats(self, v: Version) -> dict:
        entries = [m for m in self.c.get_inference_statistics(v.model, v.version).model_stats
                   if m.name == v.model and m.version == v.version]
        assert len(entries) == 1, f"{v}: {len(entries)} statistics entries"
        m = entries[0]
        return {"inference_count": m.inference_count, "execution_count": m.execution_count,
                "success": m.inference_stats.success.count, "fail": m.inference_stats.fail.count,
                "last_inference": m.last_inference}

    def stats_listed(self, model: str = "") -> set[tuple[str, str]]:
        return {(m.name, m.version) for m in self.c.get_inference_statistics(model).model_stats}

    def index(self) -> dict[tuple[str, str], str]:
        return {(m.name, m.version): m.state for m in self.c.get_model_repository_index().models}

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}  # gRPC metadata keys are lower case

    def load(self, model: str, headers: dict[str, str] | None = None) -> None:
        self.c.load_model(model, headers=headers)

    def unload(self, model: str, headers: dict[str, str] | None = None) -> None:
        self.c.unload_model(model, headers=headers)

    def infer(self, v: Version, ex: Example) -> None:
        r = self.c.infer(v.model, grpc_inputs(ex), model_version=v.version)
        check_outputs(ex, {s.name: r.as_numpy(s.name) for s in v.outputs}, f"{v} gRPC")


Side = Http | Grpc


def check_config(side: Side, v: Version) -> None:
    expect_config(side.config(v.model, v.version), v, f"{v} {side.name} config")


def check_config_default_version(side: Side, model: str) -> None:
    cfg = side.config(model)
    assert cfg.get("name") == model, f"{side.name} config of {model}: name {cfg.get('name')!r}"
    assert cfg.get("platform") == "onnxruntime_onnx", f"{side.name} config of {model}: {cfg.get('platform')!r}"


# Statistics. Triton's statistics extension: inference_count counts inferences, i.e. batch rows ("a single request
# with batch size 64 increments it by 64"); execution_count counts model executions (fewer than requests only when
# requests are batched together); inference_stats.success.count counts successful requests.


def normalise_http_stats(m: dict) -> dict:
    stats = m["inference_stats"]
    for part in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        assert isinstance(stats[part]["count"], int) and isinstance(stats[part]["ns"], int), (part, stats[part])
    return {"inference_count": m["inference_count"], "execution_count": m["execution_count"],
            "success": stats["success"]["count"], "fail": stats["fail"]["count"],
            "last_inference": m["last_inference"]}


def expect_moved(before: dict, after: dict, requests: int, rows: int, what: str) -> None:
    d = {k: after[k] - before[k] for k in ("inference_count", "execution_count", "success", "fail")}
    assert d["inference_count"] == requests * rows, \
        f"{what}: inference_count moved by {d['inference_count']} after {requests} requests of {rows} rows, " \
        f"expected {requests * rows} (Triton counts every row of a batch)"
    assert d["success"] == requests, f"{what}: success.count moved by {d['success']}, expected {requests}"
    assert 1 <= d["execution_count"] <= requests, \
        f"{what}: execution_count moved by {d['execution_count']}, expected 1..{requests}"
    assert d["fail"] == 0, f"{what}: fail.count moved by {d['fail']} though every request succeeded"
    assert after["last_inference"] > 0 and after["last_inference"] >= before["last_inference"], \
        f"{what}: last_inference {before['last_inference']} -> {after['last_inference']}"


def check_stats(side: Side, v: Version, other: Version | None) -> None:
    """Exactly STATS_REQUESTS requests to `v`, and its statistics moved by exactly them, another version's of the
    same model not at all. The counts are read right after the answers: the statistics must be up to date by the
    time the answer is sent, as Triton's are."""
    ex = largest_example(v)
    before, other_before = side.stats(v), (side.stats(other) if other else None)
    for _ in range(STATS_REQUESTS):
        side.infer(v, ex)
    after = side.stats(v)
    expect_moved(before, after, STATS_REQUESTS, ex.rows, f"{v} {side.name} statistics")
    if other and other_before:
        other_after = side.stats(other)
        assert other_after["inference_count"] == other_before["inference_count"], \
            f"{other}'s inference_count moved though only {v} was called"


def check_stats_agree(h: Http, g: Grpc, v: Version) -> None:
    """Both protocols count every request, whichever protocol carried it: the two endpoints give one picture."""
    hs, gs = h.stats(v), g.stats(v)
    for k in ("inference_count", "execution_count", "success", "fail", "last_inference"):
        assert hs[k] == gs[k], f"{v} {k}: {hs[k]} over HTTP, {gs[k]} over gRPC"


def check_stats_listing(side: Side, ready: list[Version]) -> None:
    """Without a version: every version of the model; without a model: every model's versions."""
    want = {(v.model, v.version) for v in ready}
    everything = side.stats_listed()
    assert want <= everything, f"{side.name} statistics of all models lack {sorted(want - everything)}"
    for model in sorted({v.model for v in ready}):
        mine = {(m, ver) for m, ver in want if m == model}
        got = side.stats_listed(model)
        assert got == mine, f"{side.name} statistics of {model} list {sorted(got)}, expected {sorted(mine)}"


# Repository index and load/unload.


def check_index(side: Side, ready: list[Version]) -> None:
    index = side.index()
    for v in ready:
        state = index.get((v.model, v.version))
        assert state == "READY", f"{side.name} repository index: {v} is {state!r}, expected 'READY' ({index})"


def expect_refused(call: object, want_status: str, what: str) -> None:
    try:
        call()
    except InferenceServerException as e:
        assert want_status in str(e.status()), f"{what}: status {e.status()} ({e.message()}), expected {want_status}"
        return
    raise AssertionError(f"{what}: accepted without a valid admin token")


def model_ready(h: httpclient.InferenceServerClient, g: grpcclient.InferenceServerClient, model: str) -> bool:
    """Ready over both protocols. Triton answers gRPC ModelReady for an unloaded model with ready=false; an error
    (such as NOT_FOUND) is taken as not ready too. HTTP answers 200 only when ready."""
    over_http = h.is_model_ready(model)
    try:
        over_grpc = g.is_model_ready(model)
    except InferenceServerException:
        over_grpc = False
    assert over_http == over_grpc, f"{model}: ready over HTTP {over_http}, over gRPC {over_grpc}"
    return over_http


def check_lifecycle_refused(side: Side, h: httpclient.InferenceServerClient, g: grpcclient.InferenceServerClient,
                            v: Version) -> None:
    """Load and unload without the admin token, or with a wrong one: 403 / PERMISSION_DENIED, and the model goes
    on serving."""
    wrong = side.auth("not-the-token")
    expect_refused(lambda: side.unload(v.model), side.refused, f"{side.name} unload without a token")
    expect_refused(lambda: side.unload(v.model, wrong), side.refused, f"{side.name} unload with a wrong token")
    expect_refused(lambda: side.load(v.model), side.refused, f"{side.name} load without a token")
    assert model_ready(h, g, v.model), f"{v.model} is no longer ready after refused calls"
    side.infer(v, v.examples[0])


def check_lifecycle(side: Side, h: httpclient.InferenceServerClient, g: grpcclient.InferenceServerClient,
                    v: Version, token: str) -> None:
    """With the token: unload takes the model out of service at once, load brings it back ready and answering
    its golden examples (Triton's load returns once the model is loaded)."""
    assert token, f"no admin token: set {TOKEN_ENV}"
    assert model_ready(h, g, v.model), f"{v.model} not ready before the {side.name} unload"
    side.unload(v.model, side.auth(token))
    assert not model_ready(h, g, v.model), f"{v.model} still ready after the {side.name} unload"
    assert not h.is_model_ready(v.model, v.version), f"{v} still ready after the {side.name} unload"
    state = side.index().get((v.model, v.version))
    assert state != "READY", f"the {side.name} repository index still says {v} is READY after the unload"
    side.load(v.model, side.auth(token))
    assert model_ready(h, g, v.model), f"{v.model} not ready after the {side.name} load"
    http_golden(h, v, binary_in=True, binary_out=True)
    grpc_golden(g, v, name_outputs=True)


def restore(h: httpclient.InferenceServerClient, model: str, token: str) -> None:
    """Loads the model again if a failed lifecycle check left it unloaded (best effort: errors were reported)."""
    try:
        if token and not h.is_model_ready(model):
            h.load_model(model, headers=Http.auth(token))
    except InferenceServerException:
        pass


# ---------------------------------------------------------------------------------------------------------------
# What worked before the Triton extensions: health, metadata, routing, errors.


def check_basics(h: httpclient.InferenceServerClient, g: grpcclient.InferenceServerClient,
                 bc: Version) -> None:
    assert g.is_server_live() and g.is_server_ready() and h.is_server_live() and h.is_server_ready()
    ex = bc.examples[0]
    # Without a version the gateway answers with the model's stable version (2; version 3 is a candidate).
    r = g.infer(bc.model, grpc_inputs(ex), request_id="tc-1")
    assert r.get_response().model_version == "2" and r.get_response().id == "tc-1", r.get_response()
    hr = h.infer(bc.model, http_inputs(ex, True), request_id="tc-2")
    assert hr.get_response().get("model_version") == "2" and hr.get_response().get("id") == "tc-2"
    try:
        g.infer("no-such-model", grpc_inputs(ex))
        raise AssertionError("gRPC: an unknown model must fail")
    except InferenceServerException as e:
        assert "NOT_FOUND" in str(e.status()) and "no-such-model" in e.message(), (e.status(), e.message())
    try:
        h.infer("no-such-model", http_inputs(ex, True))
        raise AssertionError("HTTP: an unknown model must fail")
    except InferenceServerException as e:
        assert "no-such-model" in e.message(), (e.status(), e.message())
    x = ex.inputs[0].value
    bad = grpcclient.InferInput(ex.inputs[0].name, [x.shape[0], x.shape[1] - 1], ex.inputs[0].datatype)
    bad.set_data_from_numpy(np.ascontiguousarray(x[:, :-1]))
    try:
        g.infer(bc.model, [bad])
        raise AssertionError("a wrong shape must fail")
    except InferenceServerException as e:
        assert "INVALID_ARGUMENT" in str(e.status()), (e.status(), e.message())


# ---------------------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grpc", required=True, help="host:port of the gateway's gRPC listener")
    ap.add_argument("--http", required=True, help="host:port of the gateway's HTTP listener")
    ap.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[3] / "models",
                    help="the model repository the gateway serves (default: the bundled models)")
    a = ap.parse_args()
    token = os.environ.get(TOKEN_ENV, "")

    h = httpclient.InferenceServerClient(url=a.http)
    g = grpcclient.InferenceServerClient(url=a.grpc)
    fail_fast_if(not (h.is_server_live() and g.is_server_live()), "the gateway is not live")

    bundled = load_repository(a.models)
    fail_fast_if(not bundled, f"no versions under {a.models}")
    ready = [v for v in bundled if h.is_model_ready(v.model, v.version)]
    for v in bundled:
        if v not in ready:
            print(f"SKIP {v}: not ready")
    fail_fast_if(not ready, "no bundled version is ready")
    by_name = {(v.model, v.version): v for v in ready}

    rep = Report()
    if ("breast-cancer", "2") in by_name:
        rep.check("basics: health, default version, request id, unknown model, wrong shape", check_basics, h, g,
                  by_name[("breast-cancer", "2")])

    # Every ready version, every golden example, every way tritonclient carries tensors.
    gzip_both = dict(request_compression_algorithm="gzip", response_compression_algorithm="gzip")
    deflate_both = dict(request_compression_algorithm="deflate", response_compression_algorithm="deflate")
    http_ways = [
        ("binary in, binary out (defaults)", dict(binary_in=True, binary_out=True)),
        ("binary in, JSON out", dict(binary_in=True, binary_out=False)),
        ("JSON in, binary out", dict(binary_in=False, binary_out=True)),
        ("JSON in, JSON out", dict(binary_in=False, binary_out=False)),
        ("no outputs named", dict(binary_in=True, binary_out=None)),
        ("gzip request and response, binary tensors",
         dict(binary_in=True, binary_out=True, tiles=COMPRESSION_TILES, **gzip_both)),
        ("deflate request and response, JSON tensors",
         dict(binary_in=False, binary_out=False, tiles=COMPRESSION_TILES, **deflate_both)),
    ]
    for v in ready:
        rep.check(f"metadata: {v}", check_metadata, h, g, v)
        for way, kwargs in http_ways:
            rep.check(f"HTTP {way}: {v}", http_golden, h, v, **kwargs)
        rep.check(f"gRPC outputs named: {v}", grpc_golden, g, v, name_outputs=True)
        rep.check(f"gRPC no outputs named: {v}", grpc_golden, g, v, name_outputs=False)
    if ("breast-cancer", "1") in by_name:
        for encoding in ("gzip", "deflate"):
            rep.check(f"HTTP {encoding} body inflated and answer compressed on the wire",
                      compressed_on_the_wire, a.http, by_name[("breast-cancer", "1")], encoding)

    # Triton's extensions, each protocol on its own.
    sides: list[Side] = [Http(h), Grpc(g)]
    for side in sides:
        for v in ready:
            rep.check(f"{side.name} model config: {v}", check_config, side, v)
        for model in sorted({v.model for v in ready}):
            rep.check(f"{side.name} model config without a version: {model}", check_config_default_version, side,
                      model)
    target, other = by_name.get(("breast-cancer", "1")), by_name.get(("breast-cancer", "2"))
    if target:
        for side in sides:
            rep.check(f"{side.name} statistics after {STATS_REQUESTS} requests: {target}", check_stats, side, target,
                      other)
        rep.check(f"statistics agree over HTTP and gRPC: {target}", check_stats_agree, sides[0], sides[1], target)
    for side in sides:
        rep.check(f"{side.name} statistics of every model and of every version of a model", check_stats_listing,
                  side, ready)
        rep.check(f"{side.name} repository index lists every ready version as READY", check_index, side, ready)

    # Last, as they take a model down and bring it back. After each check the model is loaded again if a failure
    # left it down, so that one failure does not fail the next check too.
    lifecycle = [v for v in ready if v.model == LIFECYCLE_MODEL]
    if lifecycle:
        v = lifecycle[0]
        for side in sides:
            rep.check(f"{side.name} load/unload refused without the admin token: {v.model}", check_lifecycle_refused,
                      side, h, g, v)
            restore(h, v.model, token)
        for side in sides:
            rep.check(f"{side.name} unload and load with the admin token: {v.model}", check_lifecycle, side, h, g, v,
                      token)
            restore(h, v.model, token)
    else:
        print(f"SKIP load/unload: {LIFECYCLE_MODEL} is not among the ready versions")

    return rep.finish(OK_LINE)


if __name__ == "__main__":
    raise SystemExit(main())
