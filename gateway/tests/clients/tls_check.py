"""Calls a gateway serving TLS with NVIDIA's tritonclient, over HTTPS and gRPC with SSL, as a Triton user would.

Run by gateway/tests/tls.rs against a gateway it starts with TLS (and, for mTLS, a client CA):

    python tls_check.py --http H:P --grpc H:P --models <repository> --ca ca.crt [--cert c.crt --key c.key]
                        [--expect refused]

With `--expect ok` (the default) every golden example of breast-cancer v1 is answered over HTTPS (tritonclient's
`ssl=True` with the CA in `ssl_options`, host name checked) and over gRPC (`ssl=True` with `root_certificates`,
and `private_key` / `certificate_chain` for mTLS). With `--expect refused` (a wrong CA, or no client certificate
where one is required) each protocol's call must fail before it reaches the model. The last line is
"tritonclient over TLS: ok" only when every check passed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from golden import check_outputs, load_repository
from report import Report

OK_LINE = "tritonclient over TLS: ok"
MODEL, VERSION = "breast-cancer", "1"


def http_client(a: argparse.Namespace) -> httpclient.InferenceServerClient:
    options = {"ca_certs": a.ca}
    if a.cert:
        options |= {"certfile": a.cert, "keyfile": a.key}
    return httpclient.InferenceServerClient(a.http, ssl=True, ssl_options=options, connection_timeout=5.0,
                                            network_timeout=5.0)


def grpc_client(a: argparse.Namespace) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(a.grpc, ssl=True, root_certificates=a.ca, private_key=a.key,
                                            certificate_chain=a.cert)


def golden(c, module, v, what: str, **kwargs: object) -> None:
    """Every golden example of `v` through client `c` (tritonclient's http or grpc `module`), at its defaults."""
    for ex in v.examples:
        inputs = []
        for t in ex.inputs:
            i = module.InferInput(t.name, list(t.value.shape), t.datatype)
            i.set_data_from_numpy(t.value)
            inputs.append(i)
        r = c.infer(v.model, inputs, model_version=v.version, **kwargs)
        check_outputs(ex, {s.name: r.as_numpy(s.name) for s in v.outputs}, f"{v} {what}")


def golden_http(a: argparse.Namespace, v) -> None:
    c = http_client(a)
    assert c.is_server_ready(), "not ready over HTTPS"
    golden(c, httpclient, v, "HTTPS")


def golden_grpc(a: argparse.Namespace, v) -> None:
    c = grpc_client(a)
    assert c.is_server_ready(client_timeout=5.0), "not ready over gRPC with SSL"
    golden(c, grpcclient, v, "gRPC with SSL", client_timeout=5.0)


def refused(call, what: str) -> None:
    try:
        call()
    except Exception as e:  # noqa: BLE001 - any failure to connect is the expected outcome
        print(f"  {what} refused: {type(e).__name__}: {' '.join(str(e).split())[:160]}", flush=True)
        return
    raise AssertionError(f"{what} was answered; it should have been refused")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--http", required=True)
    p.add_argument("--grpc", required=True)
    p.add_argument("--models", required=True, type=Path)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--expect", choices=["ok", "refused"], default="ok")
    a = p.parse_args()
    v = next(v for v in load_repository(a.models) if v.model == MODEL and v.version == VERSION)
    r = Report()
    if a.expect == "ok":
        r.check("HTTPS (ssl=True, CA verified, host name checked)", golden_http, a, v)
        r.check("gRPC with SSL (root_certificates)", golden_grpc, a, v)
    else:
        r.check("HTTPS refused", refused, lambda: http_client(a).is_server_ready(), "HTTPS")
        r.check("gRPC with SSL refused", refused, lambda: grpc_client(a).is_server_ready(client_timeout=5.0),
                "gRPC")
    return r.finish(OK_LINE)


if __name__ == "__main__":
    raise SystemExit(main())
