"""Test fixtures for the rollout controller: two faulty variants of `breast-cancer` version 1, written to
`gateway/tests/fixtures/breast-cancer/<variant>/`. Both keep version 1's answers exactly (so they pass its golden
examples and load like any healthy version) and fail only at serving time, inside ONNX Runtime:

- `erroring`: a Gather whose index leaves its data when `mean radius` > 25, so those requests fail in the runtime
  (the gateway answers 500), as a model with a bad op on part of the input space would;
- `slow`: three 512x512 matrix products on every call, result multiplied by zero, so it answers right but slowly.

The extra nodes take their operands from the input, so ONNX Runtime cannot fold them away at session creation.

Run: `python models/train/fixtures.py` (or `make models`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MODELS = Path(__file__).resolve().parent.parent
OUT = MODELS.parent / "gateway" / "tests" / "fixtures" / "breast-cancer"
# Requests whose first feature exceeds this fail on the erroring variant; the training maximum is about 28.
ERROR_ABOVE = 25.0
SLOW_SIZE = 512
SLOW_PRODUCTS = 3


def base() -> tuple[onnx.ModelProto, dict]:
    model = onnx.load(str(MODELS / "breast-cancer" / "1" / "model.onnx"))
    manifest = json.loads((MODELS / "breast-cancer" / "1" / "manifest.json").read_text())
    return model, manifest


def rename_output(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]


def const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(value, name)


def add_zero_term(graph: onnx.GraphProto, term: str) -> None:
    """`probabilities` becomes `probabilities + 0 * term`: same values, but the term must be computed."""
    rename_output(graph, "probabilities", "probabilities_base")
    graph.initializer.append(const("fx_zero", np.array(0.0, dtype=np.float32)))
    graph.node.extend(
        [
            helper.make_node("Mul", [term, "fx_zero"], ["fx_nothing"]),
            helper.make_node("Add", ["probabilities_base", "fx_nothing"], ["probabilities"]),
        ]
    )


def erroring() -> onnx.ModelProto:
    model, _ = base()
    g = model.graph
    g.initializer.extend(
        [
            const("fx_starts", np.array([0], dtype=np.int64)),
            const("fx_ends", np.array([1], dtype=np.int64)),
            const("fx_axes", np.array([1], dtype=np.int64)),
            const("fx_limit", np.array(ERROR_ABOVE, dtype=np.float32)),
            const("fx_jump", np.array(1000, dtype=np.int64)),
            const("fx_table", np.array([0.0], dtype=np.float32)),
        ]
    )
    g.node.extend(
        [
            helper.make_node("Slice", ["input", "fx_starts", "fx_ends", "fx_axes"], ["fx_radius"]),
            helper.make_node("Greater", ["fx_radius", "fx_limit"], ["fx_over"]),
            helper.make_node("Cast", ["fx_over"], ["fx_over_i"], to=TensorProto.INT64),
            helper.make_node("Mul", ["fx_over_i", "fx_jump"], ["fx_index"]),
            # Index 0 is in range; index 1000 is not, and ONNX Runtime fails the call.
            helper.make_node("Gather", ["fx_table", "fx_index"], ["fx_gathered"], axis=0),
        ]
    )
    add_zero_term(g, "fx_gathered")
    return model


def slow() -> onnx.ModelProto:
    model, _ = base()
    g = model.graph
    g.initializer.extend(
        [
            const("fx_shape", np.array([SLOW_SIZE, SLOW_SIZE], dtype=np.int64)),
            const("fx_one", np.array(1.0, dtype=np.float32)),
        ]
    )
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["fx_mean"], keepdims=0),
        helper.make_node("Add", ["fx_mean", "fx_one"], ["fx_seed"]),
        helper.make_node("Expand", ["fx_seed", "fx_shape"], ["fx_m0"]),
    ]
    for i in range(SLOW_PRODUCTS):
        nodes.append(helper.make_node("MatMul", [f"fx_m{i}", "fx_m0"], [f"fx_m{i + 1}"]))
    nodes.append(helper.make_node("ReduceMean", [f"fx_m{SLOW_PRODUCTS}"], ["fx_slow"], keepdims=0))
    g.node.extend(nodes)
    add_zero_term(g, "fx_slow")
    return model


def write(variant: str, model: onnx.ModelProto, description: str) -> None:
    onnx.checker.check_model(model)
    _, manifest = base()
    manifest["description"] = description
    manifest["stage"] = "candidate"
    out = OUT / variant
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(model.SerializeToString())
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"fixture {variant}: {out}")


def main() -> None:
    write("erroring", erroring(), f"test fixture: version 1 that fails inside ONNX Runtime when mean radius > {ERROR_ABOVE}")
    write("slow", slow(), f"test fixture: version 1 plus {SLOW_PRODUCTS} products of {SLOW_SIZE}x{SLOW_SIZE} matrices")


if __name__ == "__main__":
    main()
