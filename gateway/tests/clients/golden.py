"""The bundled models' golden examples, read from the model repository on disk, for the client checks.

Every version directory `<repository>/<model>/<version>/manifest.json` declares its input and output tensors and
carries `golden` examples (inputs, expected outputs, tolerance). tritonclient_check.py and kserve_check.py run in
different venvs (tritonclient and kserve both register the protobuf package `inference`, so they cannot share a
process) and both import this module: it needs only numpy and the standard library.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The protocol's datatypes as numpy dtypes. BYTES elements are Python bytes in an object array, as both SDKs expect.
NP_DTYPES: dict[str, type] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}

# The same datatypes as Triton's model configuration names them (model_config.proto's DataType enum).
TRITON_CONFIG_TYPES: dict[str, str] = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
}


@dataclass(frozen=True)
class Spec:
    """A tensor a version declares: its name, datatype and shape (-1 for the batch dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Tensor:
    """A golden tensor: its declared datatype and its value as a numpy array of that datatype."""

    name: str
    datatype: str
    value: np.ndarray


@dataclass(frozen=True)
class Example:
    index: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    tolerance: float

    @property
    def rows(self) -> int:
        return int(self.inputs[0].value.shape[0])

    def tiled(self, times: int) -> Example:
        """The same example with its rows repeated `times` times (a bigger batch with known answers)."""

        def tile(t: Tensor) -> Tensor:
            reps = (times,) + (1,) * (t.value.ndim - 1)
            return Tensor(t.name, t.datatype, np.tile(t.value, reps))

        return Example(self.index, tuple(map(tile, self.inputs)), tuple(map(tile, self.outputs)), self.tolerance)


@dataclass(frozen=True)
class Version:
    model: str
    version: str
    inputs: tuple[Spec, ...]
    outputs: tuple[Spec, ...]
    examples: tuple[Example, ...]

    def __str__(self) -> str:
        return f"{self.model} v{self.version}"


def array(datatype: str, shape: list[int], data: list) -> np.ndarray:
    """A manifest's flat JSON data as a numpy array of the declared datatype (BYTES: JSON strings become bytes)."""
    if datatype == "BYTES":
        flat = [d.encode("utf-8") if isinstance(d, str) else bytes(d) for d in data]
        return np.array(flat, dtype=np.object_).reshape(shape)
    return np.array(data, dtype=NP_DTYPES[datatype]).reshape(shape)


def _version_key(v: str) -> tuple[int, str]:
    return (int(v), v) if v.isdigit() else (1 << 62, v)


def load_repository(root: Path) -> list[Version]:
    """Every version in the repository, ordered by model name and then numerically by version."""
    versions = []
    for manifest in sorted(root.glob("*/*/manifest.json")):
        m = json.loads(manifest.read_text())
        model, version = manifest.parent.parent.name, manifest.parent.name
        inputs = tuple(Spec(i["name"], i["datatype"], tuple(i["shape"])) for i in m["inputs"])
        outputs = tuple(Spec(o["name"], o["datatype"], tuple(o["shape"])) for o in m["outputs"])
        types = {s.name: s.datatype for s in inputs + outputs}
        examples = tuple(
            Example(
                index=n,
                inputs=tuple(Tensor(t["name"], types[t["name"]], array(types[t["name"]], t["shape"], t["data"]))
                             for t in g["inputs"]),
                outputs=tuple(Tensor(t["name"], types[t["name"]], array(types[t["name"]], t["shape"], t["data"]))
                              for t in g["outputs"]),
                tolerance=float(g["tolerance"]),
            )
            for n, g in enumerate(m.get("golden", []))
        )
        versions.append(Version(model, version, inputs, outputs, examples))
    versions.sort(key=lambda v: (v.model, _version_key(v.version)))
    return versions


def _as_bytes(x: object) -> bytes:
    return x.encode("utf-8") if isinstance(x, str) else bytes(x)


def mismatch(want: Tensor, got: np.ndarray | None, tolerance: float) -> str | None:
    """Why an answer differs from the golden output, or None when it matches.

    Floats match within the golden tolerance, relative to the expected value's size: |got - want| <= tol * (1 +
    |want|). Integers and booleans match exactly, and BYTES compare as bytes (a client may hand back str or bytes).
    The answer must also have the golden shape and the declared datatype's numpy dtype.
    """
    if got is None:
        return f"output '{want.name}' is missing from the answer"
    if tuple(got.shape) != tuple(want.value.shape):
        return f"output '{want.name}': shape {list(got.shape)}, expected {list(want.value.shape)}"
    if want.datatype == "BYTES":
        g = [_as_bytes(x) for x in got.reshape(-1)]
        w = [_as_bytes(x) for x in want.value.reshape(-1)]
        return None if g == w else f"output '{want.name}': {g}, expected {w}"
    expected_dtype = np.dtype(NP_DTYPES[want.datatype])
    if got.dtype != expected_dtype:
        return f"output '{want.name}': numpy dtype {got.dtype}, expected {expected_dtype} ({want.datatype})"
    if want.datatype in ("FP16", "FP32", "FP64"):
        g, w = got.astype(np.float64), want.value.astype(np.float64)
        bad = ~(np.abs(g - w) <= tolerance * (1.0 + np.abs(w)))  # NaN compares False, so it is caught too
        if bad.any():
            i = int(np.flatnonzero(bad.reshape(-1))[0])
            return (f"output '{want.name}': element {i} is {g.reshape(-1)[i]!r}, expected {w.reshape(-1)[i]!r} "
                    f"within {tolerance} * (1 + |expected|)")
        return None
    if not np.array_equal(got, want.value):
        return f"output '{want.name}': {got.reshape(-1).tolist()}, expected {want.value.reshape(-1).tolist()}"
    return None


def check_outputs(example: Example, got: dict[str, np.ndarray | None], what: str) -> None:
    """Raises AssertionError naming the example and every output that differs from the golden answer."""
    problems = [p for t in example.outputs if (p := mismatch(t, got.get(t.name), example.tolerance)) is not None]
    assert not problems, f"{what}, golden example {example.index}: " + "; ".join(problems)
