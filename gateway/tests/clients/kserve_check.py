"""Calls a running gateway with KServe's Python SDK (the `kserve` package), over REST (v2 protocol) and gRPC.

Run by gateway/tests/clients.rs against a gateway it starts, with the interpreter of .venv-kserve (kserve and
tritonclient both register the protobuf package `inference`, so they live in separate venvs):

    python kserve_check.py --http H:P --grpc H:P --models <repository>

Every version in the model repository on disk that the gateway reports ready is called explicitly with each of its
golden examples: over REST with JSON tensors, binary tensors both ways, and binary in with JSON out; over gRPC with
raw_input_contents and with typed contents. FP16 goes binary or raw only: the SDK refuses FP16 as JSON or typed
contents itself ("Sending FP16 data via JSON is not supported"), before anything reaches the gateway.

Each check prints PASS or FAIL with the reason and the run goes on; the last line is "kserve over REST and gRPC: ok"
only when everything passed (the exit status says so too).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grpc", required=True, help="host:port of the gateway's gRPC listener")
    ap.add_argument("--http", required=True, help="host:port of the gateway's HTTP listener")
    ap.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[3] / "models",
                    help="the model repository the gateway serves (default: the bundled models)")
    return ap.parse_args()


# Importing kserve parses sys.argv (its model server's options, at module level) and exits on our --grpc, an
# ambiguous abbreviation of its --grpc_port: so our arguments are parsed first, then hidden from it.
ARGS = parse_args()
del sys.argv[1:]

import grpc  # noqa: E402
import httpx  # noqa: E402
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig  # noqa: E402
from kserve.protocol.infer_type import InferResponse, RequestedOutput  # noqa: E402

from golden import Example, Version, check_outputs, load_repository  # noqa: E402
from report import Report, fail_fast_if  # noqa: E402

OK_LINE = "kserve over REST and gRPC: ok"
HEADER_LENGTH = "inference-header-content-length"
# The gateway names the version that answered in this response header (its own; KServe's REST client does not
# read model_version from a response body that has binary outputs).
VERSION_HEADER = "x-model-version"


def versioned(v: Version) -> str:
    """The SDK's REST client builds `v2/models/{model_name}/infer` and has no version argument; a model name of
    `<model>/versions/<version>` makes that the protocol's versioned path, `v2/models/<m>/versions/<v>/infer`."""
    return f"{v.model}/versions/{v.version}"


def rest_request(v: Version, ex: Example, *, binary_in: bool, binary_out: bool) -> InferRequest:
    inputs = []
    for t in ex.inputs:
        i = InferInput(t.name, list(t.value.shape), t.datatype)
        if binary_in:
            i.set_data_from_numpy(t.value)  # the SDK's default: binary_data=True
        else:
            i.set_data_from_numpy(t.value, binary_data=False)
        inputs.append(i)
    # Binary answers asked for both ways the protocol allows: the request-wide binary_data_output when every
    # output should be binary, and nothing at all (JSON answers) otherwise.
    params = {"binary_data_output": True} if binary_out else None
    return InferRequest(model_name=v.model, infer_inputs=inputs, parameters=params)


def outputs_of(r: InferResponse, v: Version) -> dict:
    found = {o.name: o for o in r.outputs}
    return {s.name: found[s.name].as_numpy() if s.name in found else None for s in v.outputs}


async def rest_golden(c: InferenceRESTClient, base: str, v: Version, *, binary_in: bool, binary_out: bool) -> None:
    for ex in v.examples:
        headers: dict[str, str] = {}
        r = await c.infer(base, rest_request(v, ex, binary_in=binary_in, binary_out=binary_out),
                          model_name=versioned(v), response_headers=headers)
        what = f"{v} REST"
        assert headers.get(VERSION_HEADER) == v.version, f"{what}: answered by version {headers.get(VERSION_HEADER)}"
        # A binary answer has a JSON header of the stated length before the tensors; a JSON answer has none.
        assert (HEADER_LENGTH in headers) == binary_out, \
            f"{what}: answer {'with' if HEADER_LENGTH in headers else 'without'} {HEADER_LENGTH}, " \
            f"asked for {'binary' if binary_out else 'JSON'} outputs"
        check_outputs(ex, outputs_of(r, v), what)


async def grpc_golden(c: InferenceGRPCClient, v: Version, *, raw: bool) -> None:
    for ex in v.examples:
        inputs = []
        for t in ex.inputs:
            if raw:
                i = InferInput(t.name, list(t.value.shape), t.datatype)
                i.set_data_from_numpy(t.value)  # raw_input_contents
            else:
                # A flat list goes into the typed contents field of the datatype (fp32_contents, bytes_contents, ...).
                i = InferInput(t.name, list(t.value.shape), t.datatype, data=t.value.reshape(-1).tolist())
            inputs.append(i)
        outs = [RequestedOutput(s.name) for s in v.outputs]
        r = await c.infer(InferRequest(model_name=v.model, model_version=v.version, infer_inputs=inputs,
                                       request_outputs=outs))
        what = f"{v} gRPC"
        assert r.model_name == v.model and r.model_version == v.version, \
            f"{what}: answered by {r.model_name} v{r.model_version}"
        check_outputs(ex, outputs_of(r, v), what)


async def check_basics(rest: InferenceRESTClient, base: str, g: InferenceGRPCClient, v: Version) -> None:
    assert await rest.is_server_live(base) and await rest.is_server_ready(base), "REST: server live and ready"
    assert await rest.is_model_ready(base, v.model), f"REST: {v.model} ready"
    assert await g.is_server_live() and await g.is_server_ready(), "gRPC: server live and ready"
    assert await g.is_model_ready(v.model), f"gRPC: {v.model} ready"
    ex = v.examples[0]
    try:
        await rest.infer(base, rest_request(v, ex, binary_in=False, binary_out=False), model_name="no-such-model")
        raise AssertionError("REST: an unknown model must fail")
    except httpx.HTTPStatusError as e:
        assert e.response.status_code == 404 and "no-such-model" in str(e), str(e)
    inputs = []
    for t in ex.inputs:
        i = InferInput(t.name, list(t.value.shape), t.datatype)
        i.set_data_from_numpy(t.value)
        inputs.append(i)
    try:
        await g.infer(InferRequest(model_name="no-such-model", infer_inputs=inputs))
        raise AssertionError("gRPC: an unknown model must fail")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND and "no-such-model" in (e.details() or ""), e


async def run(a: argparse.Namespace) -> int:
    base = f"http://{a.http}"
    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    # Retries off: a failure should show at once, not after the SDK's backoff.
    g = InferenceGRPCClient(a.grpc, retries=0, timeout=30)
    try:
        fail_fast_if(not await rest.is_server_live(base), "the gateway is not live over REST")
        bundled = load_repository(a.models)
        fail_fast_if(not bundled, f"no versions under {a.models}")
        ready = []
        for v in bundled:
            if await rest.is_model_ready(base, versioned(v)):
                ready.append(v)
            else:
                print(f"SKIP {v}: not ready")
        fail_fast_if(not ready, "no bundled version is ready")

        rep = Report()
        await rep.acheck("basics: health, readiness, unknown model", check_basics, rest, base, g, ready[0])
        for v in ready:
            fp16 = any(s.datatype == "FP16" for s in v.inputs)
            if fp16:
                print(f"SKIP REST JSON in: {v}: the SDK refuses FP16 tensors as JSON")
            else:
                await rep.acheck(f"REST JSON in, JSON out: {v}", rest_golden, rest, base, v,
                                 binary_in=False, binary_out=False)
            await rep.acheck(f"REST binary in, binary out: {v}", rest_golden, rest, base, v,
                             binary_in=True, binary_out=True)
            await rep.acheck(f"REST binary in, JSON out: {v}", rest_golden, rest, base, v,
                             binary_in=True, binary_out=False)
            await rep.acheck(f"gRPC raw contents: {v}", grpc_golden, g, v, raw=True)
            if fp16:
                print(f"SKIP gRPC typed contents: {v}: FP16 has no typed contents field, only raw")
            else:
                await rep.acheck(f"gRPC typed contents: {v}", grpc_golden, g, v, raw=False)
        return rep.finish(OK_LINE)
    finally:
        await rest.close()
        await g.close()


def main() -> int:
    # The SDK logs every failed gRPC call with a traceback, expected failures included; the checks report their own.
    logging.getLogger("kserve").setLevel(logging.CRITICAL)
    return asyncio.run(run(ARGS))


if __name__ == "__main__":
    raise SystemExit(main())
