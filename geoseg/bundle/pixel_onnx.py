"""Pixel models (``architecture: pixel``) as self-describing ONNX files: never pickled.

One ONNX graph does what prediction needs, so the existing ONNX engine
(:mod:`geoseg.inference.onnx_engine`) runs it through the tiled predictor like any exported
model: one input per modality ``(B, C, H, W)`` (normalised by the card, as for every model),
the per-pixel features (the bands; with ``local: k`` also their k×k mean and standard
deviation, reflect-padded), the classifier converted by skl2onnx/onnxmltools (a tree ensemble
in the ``ai.onnx.ml`` domain) on ``(B·H·W, F)`` rows, and class probabilities
``(B, K, H, W)``. The card travels in the metadata (``geoseg_card``), as in exported bundles.

:func:`feature_model` is the first half alone: training computes its features with it, so the
features a model was trained on and the ones it predicts from are computed by the same graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg._files import atomic_path
from geoseg.bundle.card import ModelCard
from geoseg.bundle.onnx_export import CARD_KEY

#: ONNX operator set of the graphs (the highest onnxmltools converts LightGBM for)
OPSET = 15
ML_OPSET = 1
FEATURES, ROWS, PROBS = "features", "rows", "probabilities"
#: added to class k's probability per class above it: far above the float32 noise of summing
#: trees in another order, far below the vote of one tree in 5000
TIE_BREAK = 1e-4 / 8


def _prefix(names: Sequence[str], bands: Sequence[int], local: int) -> tuple[list, list, list, int]:
    """Nodes, inputs and initialisers from modality inputs to (N, F) feature rows."""
    from onnx import TensorProto, helper, numpy_helper

    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", b, "H", "W"])
              for n, b in zip(names, bands, strict=True)]  # fmt: skip
    nodes = [helper.make_node("Concat", list(names), ["x_all"], axis=1)]
    inits = []
    nf = int(sum(bands))
    stack = "x_all"
    if local:
        r = local // 2
        inits.append(numpy_helper.from_array(np.array([0, 0, r, r, 0, 0, r, r], np.int64), "pads"))
        pool = {"kernel_shape": [local, local], "strides": [1, 1]}
        nodes += [
            helper.make_node("Pad", ["x_all", "pads"], ["x_pad"], mode="reflect"),
            helper.make_node("AveragePool", ["x_pad"], ["x_mean"], **pool),
            helper.make_node("Mul", ["x_pad", "x_pad"], ["x_sq"]),
            helper.make_node("AveragePool", ["x_sq"], ["x_msq"], **pool),
            helper.make_node("Mul", ["x_mean", "x_mean"], ["x_mean2"]),
            helper.make_node("Sub", ["x_msq", "x_mean2"], ["x_var"]),
            helper.make_node("Relu", ["x_var"], ["x_var0"]),
            helper.make_node("Sqrt", ["x_var0"], ["x_std"]),
            helper.make_node("Concat", ["x_all", "x_mean", "x_std"], ["x_feat"], axis=1),
        ]  # fmt: skip
        stack, nf = "x_feat", 3 * nf
    inits.append(numpy_helper.from_array(np.array([-1, nf], np.int64), "rows_shape"))
    nodes += [helper.make_node("Transpose", [stack], ["x_nhwc"], perm=[0, 2, 3, 1]),
              helper.make_node("Reshape", ["x_nhwc", "rows_shape"], [ROWS])]  # fmt: skip
    return nodes, inputs, inits, nf


def _model(graph: Any, opsets: dict[str, int]) -> Any:
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v)
                                                    for d, v in sorted(opsets.items())])  # fmt: skip
    model.ir_version = 8
    return model


def feature_model(names: Sequence[str], bands: Sequence[int], local: int) -> Any:
    """ONNX model: modality inputs ``(B, C, H, W)`` -> feature rows ``(B·H·W, F)``."""
    from onnx import TensorProto, checker, helper

    nodes, inputs, inits, nf = _prefix(names, bands, local)
    out = helper.make_tensor_value_info(ROWS, TensorProto.FLOAT, ["N", nf])
    model = _model(helper.make_graph(nodes, "geoseg_pixel_features", inputs, [out], inits),
                   {"": OPSET})  # fmt: skip
    checker.check_model(model)
    return model


def compose(names: Sequence[str], bands: Sequence[int], local: int, classifier: Any,
            classes_present: Sequence[int], num_classes: int) -> Any:  # fmt: skip
    """The whole pixel model: features, the converted ``classifier`` (an ONNX model with
    input ``(N, F)`` and an output ``probabilities`` over ``classes_present``, in that order)
    and probabilities ``(B, num_classes, H, W)`` (classes never trained on get 0)."""
    from onnx import TensorProto, checker, helper

    nodes, inputs, inits, _ = _prefix(names, bands, local)
    clf_nodes, clf_inits, probs = _graft(classifier)
    all_nodes, all_inits, probs = _all_classes(probs, classes_present, num_classes)
    img_nodes, img_inits = _to_image(probs, num_classes)
    nodes += [*clf_nodes, *all_nodes, *img_nodes]
    inits += [*clf_inits, *all_inits, *img_inits]
    out = helper.make_tensor_value_info(PROBS, TensorProto.FLOAT, ["B", num_classes, "H", "W"])
    model = _model(helper.make_graph(nodes, "geoseg_pixel_model", inputs, [out], inits),
                   _opsets(classifier))  # fmt: skip
    checker.check_model(model)
    return model


def _graft(classifier: Any) -> tuple[list, list, str]:
    """The classifier's nodes and initialisers, renamed ``clf_*`` and fed the feature rows,
    and the name of its probabilities."""
    from onnx import helper, numpy_helper

    g = classifier.graph
    rename = {g.input[0].name: ROWS}
    probs_out = next(o.name for o in g.output if "prob" in o.name.lower())

    def name(x: str) -> str:
        return rename.get(x, x if x in ("",) else f"clf_{x}")

    nodes = []
    for j, node in enumerate(g.node):
        new = helper.make_node(node.op_type, [name(i) for i in node.input],
                               [name(o) for o in node.output], domain=node.domain,
                               name=f"clf{j}_{node.name}")  # fmt: skip
        new.attribute.extend(node.attribute)
        nodes.append(new)
    inits = [numpy_helper.from_array(numpy_helper.to_array(init), name(init.name))
             for init in g.initializer]  # fmt: skip
    return nodes, inits, name(probs_out)


def _all_classes(probs: str, classes_present: Sequence[int],
                 num_classes: int) -> tuple[list, list, str]:  # fmt: skip
    """Nodes and initialisers from probabilities over the present classes to all classes',
    ties broken towards the lower class; and the name of the result."""
    from onnx import helper, numpy_helper

    nodes, inits = [], []
    present = list(classes_present)
    if present != list(range(num_classes)):  # spread to all classes: exact (x·1 + 0)
        spread = np.zeros((len(present), num_classes), np.float32)
        spread[np.arange(len(present)), present] = 1.0
        inits.append(numpy_helper.from_array(spread, "spread"))
        nodes.append(helper.make_node("MatMul", [probs, "spread"], ["probs_all"]))
        probs = "probs_all"
    # ties (a forest's votes split evenly) go to the lower class index, as argmax does, and
    # stay there however ONNX Runtime's threads order the trees' float32 sums (~1e-6)
    tie = (TIE_BREAK * np.arange(num_classes - 1, -1, -1)).astype(np.float32)
    inits.append(numpy_helper.from_array(tie, "tie_break"))
    nodes.append(helper.make_node("Add", [probs, "tie_break"], ["probs_tied"]))
    return nodes, inits, "probs_tied"


def _to_image(probs: str, num_classes: int) -> tuple[list, list]:
    """Nodes and initialisers from probability rows ``(N, K)`` to ``probabilities``
    ``(B, K, H, W)`` (B, H and W from the modalities' concatenation)."""
    from onnx import helper, numpy_helper

    inits = [numpy_helper.from_array(np.array([0, 2, 3], np.int64), "bhw_idx"),
             numpy_helper.from_array(np.array([num_classes], np.int64), "k_dim")]  # fmt: skip
    nodes = [
        helper.make_node("Shape", ["x_all"], ["x_shape"]),
        helper.make_node("Gather", ["x_shape", "bhw_idx"], ["bhw"], axis=0),
        helper.make_node("Concat", ["bhw", "k_dim"], ["bhwk"], axis=0),
        helper.make_node("Reshape", [probs, "bhwk"], ["probs_nhwk"]),
        helper.make_node("Transpose", ["probs_nhwk"], [PROBS], perm=[0, 3, 1, 2]),
    ]  # fmt: skip
    return nodes, inits


def _opsets(classifier: Any) -> dict[str, int]:
    """Operator sets of the composed model: ours and the classifier's (the higher of each)."""
    opsets = {"": OPSET, "ai.onnx.ml": ML_OPSET}
    for op in classifier.opset_import:
        if op.domain not in ("", "ai.onnx"):
            opsets[op.domain] = max(opsets.get(op.domain, 0), op.version)
    return opsets


def save_pixel_model(model: Any, card: ModelCard, path: str | Path) -> Path:
    """Write the composed model with its card in the metadata (atomically)."""
    import onnx

    from geoseg import __version__

    card = card.model_copy(update={"geoseg_version": __version__})
    del model.metadata_props[:]
    for key, value in {CARD_KEY: card.model_dump_json(), "model_type": '"Segmentor"'}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return path


def session(model: Any, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session of an in-memory model."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # the converters' unused label output has a loose shape
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])  # fmt: skip
