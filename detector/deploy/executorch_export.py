"""Export an SSDLite (or the pre-training classifier) to an ExecuTorch program for the XNNPACK backend.

    from detector.deploy.executorch_export import export_checkpoint_executorch
    export_checkpoint_executorch("best.ckpt", "model.pte")                       # fp32
    export_checkpoint_executorch("best.ckpt", "model.int8.pte", int8=True, calibration_images="photos/")

**The program** has one method, ``forward``: input ``images`` float32 ``[1, 3, H, W]`` (RGB,
``(pixels / 255 - mean) / std``, resized to ``H x W`` without keeping the aspect ratio), outputs
``cls_logits [1, A, C]`` and ``bbox_regression [1, A, 4]``: ``SSDLite.forward`` as is, the graph the ONNX
export writes without NMS. Batch 1 only (what a phone runs; :class:`~detector.deploy.executorch_runtime.
ExecuTorchRunner` runs a batch image by image). Decoding and NMS stay outside, in the project's
``PostProcessor`` (Python) or the app (``docs/executorch.md``).

**How** (public APIs only): ``torch.export.export`` of the eval model ->
``executorch.exir.to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])`` ->
``.to_executorch()``, written atomically (:func:`detector.files.atomic_write`). BatchNorm is folded
into the convolutions by the toolchain, as the ONNX exporter's constant folding does: XNNPACK's
batch-norm fusion pass in fp32, ``prepare_pt2e`` in int8 (before the observers, so the int8 weights are
the folded ones). Every operator of SSDLite lands in the XNNPACK delegate; the result lists any that
did not (``undelegated_ops``, from ``executorch.devtools.backend_debug.get_delegation_info``).

**int8**: PyTorch 2 export quantization (``torchao.quantization.pt2e.quantize_pt2e.prepare_pt2e`` /
``convert_pt2e``) with ``XNNPACKQuantizer`` and ``get_symmetric_quantization_config(is_per_channel=True)``:
int8 weights, symmetric, one scale per output channel; int8 activations, per tensor, affine, ranges
from a histogram observer. Calibration runs on the user's images, each pre-processed exactly as
ONNX int8 calibration and inference do (:class:`detector.deploy.quantize.ImageCalibrationReader`, i.e.
:class:`detector.deploy.preprocess.ImagePreprocessor`; the files picked by
:func:`~detector.deploy.quantize.find_calibration_images`). The outputs stay float32.

**Metadata: a JSON sidecar**, ``model.pte`` -> ``model.pte.json`` (:func:`sidecar_path`). It holds the
ONNX export's metadata, the same keys and values (:meth:`OnnxModelInfo.to_metadata
<detector.deploy.metadata.OnnxModelInfo.to_metadata>`, read back through ``from_metadata``: one format),
plus ``runtime`` (``"executorch"``), ``backend`` (``"xnnpack"``), ``executorch_version``, ``input``
(name, shape, dtype), ``program`` (the file name) and ``program_sha256``; a detector's also holds
``anchors_cxcywh`` (``[A, 4]``, one per output row, :func:`anchors_cxcywh`), so an app decodes without
reimplementing the anchor generator. ``int8`` and ``quantization`` (how it was made) are metadata keys
already. Compact JSON, one line (``python -m json.tool`` shows it indented).

- *Why a sidecar.* An ExecuTorch program can carry constants as extra methods (``constant_methods``:
  ints, floats, bools, strings, tensors, and lists of them, flattened); a JSON string there is readable
  by the Python runtime and by Android's ``EValue.toStr()``. But reading it means loading the program
  and running a method through the runtime, whereas the sidecar is a plain asset that an app reads in
  one line before it loads anything (to size its input buffer, pick the labels, set up decoding), that
  any JSON tool reads, and that needs no change to the program. The price, a file that
  can get separated from or mismatched with its program, is paid by a clear error: the loader names the
  missing sidecar, and ``program_sha256`` catches a sidecar of another export.
- *Why* ``model.pte.json`` *and not* ``model.json``: the name is the program's full name plus
  ``.json``, so ``model.pte`` and ``model.int8.pte`` each get their own (``model.int8.pte.json``), a
  sidecar can never be taken for another file's (a ``model.json`` config, or a ``model.onnx`` beside
  it), and a loader finds it without guessing.
"""
from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from detector.checkpoint import load_checkpoint
from detector.deploy.metadata import INPUT_NAME, OnnxModelInfo, detector_info
from detector.deploy.onnx_export import resize_model
from detector.deploy.quantize import ImageCalibrationReader, calibration_files
from detector.files import atomic_write, atomic_write_text
from detector.labels import LabelMap
from detector.modeling.ssdlite import SSDLite

__all__ = [
    "BACKEND",
    "RUNTIME",
    "ExecuTorchExportResult",
    "ProgramResult",
    "anchors_cxcywh",
    "export_checkpoint_executorch",
    "export_executorch",
    "export_program",
    "lower_to_executorch",
    "quantize_pt2e",
    "read_detector_sidecar",
    "read_sidecar",
    "sidecar_path",
    "write_sidecar",
]

RUNTIME = "executorch"
BACKEND = "xnnpack"
QUANTIZATION = {
    "format": "pt2e (torchao prepare_pt2e / convert_pt2e), XNNPACKQuantizer",
    "weights": "int8 per-channel symmetric",
    "activations": "int8 per-tensor affine (HistogramObserver)",
    "outputs": "float32",
}


# --- the sidecar: written and read here only ------------------------------------------------------


def sidecar_path(program: str | PathLike[str]) -> Path:
    """``model.pte`` -> ``model.pte.json`` (the program's full name plus ``.json``)."""
    program = Path(program)
    return program.with_name(program.name + ".json")


def write_sidecar(program: str | PathLike[str], metadata: Mapping[str, Any], input_shape: Sequence[int]) -> Path:
    """Write ``program``'s sidecar (atomically): ``metadata`` plus the runtime, backend, input and the
    program's name and sha256 (``program`` must be written already)."""
    import executorch.version

    program = Path(program)
    document = {
        **metadata,
        "runtime": RUNTIME,
        "backend": BACKEND,
        "executorch_version": executorch.version.__version__,
        "input": {"name": INPUT_NAME, "shape": [int(s) for s in input_shape], "dtype": "float32"},
        "program": program.name,
        "program_sha256": _sha256(program),
    }
    path = sidecar_path(program)
    atomic_write_text(path, json.dumps(document, separators=(",", ":")) + "\n")  # compact: thousands of anchors
    return path


def read_sidecar(program: str | PathLike[str]) -> dict[str, Any]:
    """The sidecar of ``program``, checked: ``FileNotFoundError`` naming the missing program or sidecar,
    ``ValueError`` naming a sidecar that is not JSON, not an ExecuTorch export's, or another program's."""
    program = Path(program)
    if not program.is_file():
        raise FileNotFoundError(f"ExecuTorch program not found: {program}")
    path = sidecar_path(program)
    if not path.is_file():
        raise FileNotFoundError(f"{program}: its metadata sidecar {path} is missing (the export writes it beside "
                                "the program; copy both)")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a valid JSON sidecar ({err})") from err
    if not isinstance(document, dict) or document.get("runtime") != RUNTIME:
        raise ValueError(f"{path}: not an ExecuTorch export's sidecar (no \"runtime\": \"{RUNTIME}\")")
    expected = document.get("program_sha256")
    if expected is not None and expected != _sha256(program):
        raise ValueError(f"{path} describes another program than {program} (sha256 differs): re-export, or copy "
                         "the sidecar written with this program")
    return document


def read_detector_sidecar(program: str | PathLike[str]) -> OnnxModelInfo:
    """The detector metadata of an exported program, decoded by :meth:`OnnxModelInfo.from_metadata` (the
    sidecar's values are the ONNX ``metadata_props`` entries, decoded: they are encoded back for it)."""
    document = read_sidecar(program)
    props = {key: json.dumps(value) for key, value in document.items()}
    return OnnxModelInfo.from_metadata(props, str(sidecar_path(program)))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- quantization, lowering, the one program export -----------------------------------------------


def quantize_pt2e(module: nn.Module, example: Tensor, calibration: Iterable[Tensor],
                  max_batch: int = 1) -> tuple[nn.Module, int]:
    """Static int8 of ``module`` for XNNPACK (see the module docstring), calibrated on ``calibration``.

    Args:
        module: in eval mode, taking ``example``.
        example: ``[1, 3, H, W]``, the traced input.
        calibration: normalised batches shaped like ``example``.
        max_batch: trace a batch dimension of 1 .. ``max_batch`` (:func:`lower_to_executorch`'s).

    Returns:
        The quantized ``GraphModule`` (quantize / dequantize nodes around the int8 operators) and the
        number of calibration batches it saw.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(_traced(module, example, max_batch).module(), quantizer)
    seen = 0
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
            seen += 1
    if not seen:
        raise ValueError("int8 calibration needs at least one image")
    return convert_pt2e(prepared), seen


def _traced(module: nn.Module, example: Tensor, max_batch: int) -> Any:
    """``torch.export`` of ``module`` on ``example`` ``[1, 3, H, W]``; with ``max_batch > 1`` a batch
    dimension of 1 .. ``max_batch`` (traced on two images: export specialises a batch of 1)."""
    if max_batch <= 1:
        return torch.export.export(module, (example,))
    from torch.export import Dim

    return torch.export.export(module, (torch.cat([example, example]),),
                               dynamic_shapes=({0: Dim("batch", min=1, max=max_batch)},))


def lower_to_executorch(module: nn.Module, example: Tensor, max_batch: int = 1) -> tuple[bytes, int, dict[str, int]]:
    """``module`` (fp32, or :func:`quantize_pt2e`'s) as an ExecuTorch program for XNNPACK, taking
    batches of 1 .. ``max_batch`` images.

    Returns:
        The program's bytes, the number of operators delegated to XNNPACK, and those left to the
        portable kernels (``{op: count}``; empty for SSDLite and the classifier).
    """
    from executorch.backends.xnnpack import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    with torch.no_grad():
        exported = _traced(module, example, max_batch)
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    delegation = get_delegation_info(edge.exported_program().graph_module)
    undelegated = {op: b.non_delegated for op, b in delegation.delegation_by_operator.items()
                   if b.non_delegated and op not in ("getitem", "output")}
    return edge.to_executorch().buffer, delegation.num_delegated_nodes, undelegated


@dataclass
class ProgramResult:
    """What :func:`export_program` wrote."""

    path: Path
    sidecar: Path
    metadata: dict[str, Any]
    size_bytes: int
    int8: bool
    delegated_ops: int  # operators in the XNNPACK delegate
    undelegated_ops: dict[str, int] = field(default_factory=dict)  # left to portable kernels
    calibration_images: int = 0
    max_abs_diff: float | None = None  # |program - float PyTorch| on one input (fp32 or int8 alike)


def export_program(
    module: nn.Module,
    example: Tensor,
    output: str | PathLike[str],
    metadata: Mapping[str, Any],
    *,
    calibration: Iterable[Tensor] | None = None,
    verify: bool = True,
    max_batch: int = 1,
) -> ProgramResult:
    """The one ExecuTorch export: ``module`` (eval, CPU, ``[1, 3, H, W]`` in) lowered to XNNPACK, int8
    when ``calibration`` is given, written atomically to ``output`` with its sidecar.

    Args:
        example: the traced input ``[1, 3, H, W]`` (also the check input for fp32).
        metadata: the sidecar's model entries (the ONNX metadata of the same model); with
            ``calibration`` its ``int8`` / ``quantization`` entries are set here.
        calibration: normalised ``[1, 3, H, W]`` batches (int8), else ``None`` (fp32).
        verify: run the written program once with ExecuTorch's runtime and compare it with ``module``
            (``max_abs_diff``; for int8, on the first calibration image).
        max_batch: the program takes batches of 1 .. ``max_batch`` images (ExecuTorch needs an upper
            bound), so the views of a sliced frame run in one call; the sidecar's input shape says it.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    metadata = {**metadata, "int8": calibration is not None}
    calibrated, check_input = 0, example
    if calibration is not None:
        first: list[Tensor] = []
        batches = _remember_first(calibration, first)
        lowered_module, calibrated = quantize_pt2e(module, example, batches, max_batch)
        check_input = first[0]
        metadata["quantization"] = {**QUANTIZATION, "calibration_images": calibrated}
    else:
        lowered_module = module
    buffer, delegated, undelegated = lower_to_executorch(lowered_module, example, max_batch)
    output = Path(output)
    with atomic_write(output) as tmp:
        tmp.write_bytes(buffer)
    sidecar = write_sidecar(output, metadata, (max_batch, *example.shape[1:]))
    result = ProgramResult(output, sidecar, metadata, len(buffer), calibration is not None, delegated, undelegated,
                           calibrated)
    if verify:
        result.max_abs_diff = _compare(output, module, check_input)
    return result


def _remember_first(batches: Iterable[Tensor], first: list[Tensor]) -> Iterator[Tensor]:
    for batch in batches:
        if not first:
            first.append(batch)
        yield batch


def _compare(path: Path, module: nn.Module, example: Tensor) -> float:
    """Largest |ExecuTorch - PyTorch| over the outputs of ``path`` and ``module`` on ``example``."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(path).load_method("forward")
    program_out = method.execute([example.contiguous()])
    with torch.no_grad():
        torch_out = module(example)
    torch_out = torch_out if isinstance(torch_out, (tuple, list)) else (torch_out,)
    return max(float((a - b).abs().max()) for a, b in zip(program_out, torch_out))


# --- the detector ---------------------------------------------------------------------------------


@dataclass
class ExecuTorchExportResult(ProgramResult):
    """What :func:`export_executorch` wrote: :class:`ProgramResult` plus the detector's metadata."""

    info: OnnxModelInfo | None = None
    num_anchors: int = 0


def anchors_cxcywh(info: OnnxModelInfo) -> list[list[float]]:
    """The ``[A, 4]`` anchors, one per output row, as ``(cx, cy, w, h)`` in network-input pixels rounded to
    1e-4 px: what an app decodes ``bbox_regression`` against (Python rebuilds them from the recipe)."""
    boxes = box_convert(info.anchors(), "xyxy", "cxcywh")
    return [[round(v, 4) for v in row] for row in boxes.tolist()]


def export_executorch(
    model: SSDLite,
    label_map: LabelMap,
    output: str | PathLike[str],
    *,
    image_size: int | tuple[int, int] | None = None,
    int8: bool = False,
    calibration_images: str | PathLike[str] | Sequence[str | PathLike[str]] | None = None,
    calibration_count: int | None = 100,
    progress: bool = False,
    verify: bool = True,
    max_batch: int = 1,
) -> ExecuTorchExportResult:
    """Write ``model`` as an ExecuTorch program (XNNPACK; raw outputs, batches of 1 .. ``max_batch``)
    and its sidecar.

    Args:
        model: the detector (any device; exported on the CPU in eval mode, the caller's copy untouched).
        label_map: saved in the sidecar so predictions carry the user's ids and names.
        output: the ``.pte`` path (folders are created); the sidecar is :func:`sidecar_path`'s.
        image_size: export at another input size (``None``: the model's).
        int8: quantize (see the module docstring); needs ``calibration_images``.
        calibration_images: a folder (searched recursively) or a list of image files.
        calibration_count: calibrate on this many of them (``None``: all).
        progress: a ``tqdm`` bar over the calibration images.
        verify: compare the written program with PyTorch once (``max_abs_diff``).
        max_batch: the largest batch the program takes (1: a fixed batch of one image).
    """
    if int8 and calibration_images is None:
        raise ValueError("int8 export needs calibration images")
    # Contiguous weights: XNNPACK's layout pass fails on a model already in channels-last (what
    # TorchRunner makes of a CPU model); the delegate picks its own layout anyway.
    model = copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)
    if image_size is not None:
        model = resize_model(model, image_size)
    info = detector_info(model, label_map, with_nms=False)
    calibration = None
    if int8:
        assert calibration_images is not None
        reader = ImageCalibrationReader(calibration_files(calibration_images, calibration_count), info,
                                        INPUT_NAME, batch_size=1, progress=progress)
        calibration = (torch.from_numpy(item[INPUT_NAME]) for item in iter(reader.get_next, None))
    example = torch.randn(1, 3, *model.image_size, generator=torch.Generator().manual_seed(0))
    metadata = {**info.to_metadata(), "anchors_cxcywh": anchors_cxcywh(info)}
    program = export_program(model, example, output, metadata, calibration=calibration, verify=verify,
                             max_batch=max_batch)
    if int8:
        info = replace(info, int8=True, quantization=program.metadata["quantization"])
    return ExecuTorchExportResult(**vars(program), info=info, num_anchors=int(model.anchors.shape[0]))


def export_checkpoint_executorch(
    checkpoint: str | PathLike[str],
    output: str | PathLike[str],
    *,
    image_size: int | tuple[int, int] | None = None,
    int8: bool = False,
    calibration_images: str | PathLike[str] | Sequence[str | PathLike[str]] | None = None,
    calibration_count: int | None = 100,
    progress: bool = False,
) -> ExecuTorchExportResult:
    """:func:`export_executorch` of a checkpoint file (``save_checkpoint``'s, Lightning's, or ``zoo:NAME``)."""
    model, label_map = load_checkpoint(checkpoint, map_location="cpu")
    return export_executorch(model, label_map, output, image_size=image_size, int8=int8,
                             calibration_images=calibration_images, calibration_count=calibration_count,
                             progress=progress)
