"""Cost of a captioning model, measured the same way for every encoder x fusion x decoder.

Reported next to the scores in every run's ``metrics.json`` (MultiBench's lesson: quality alone
does not compare fusion methods; time, memory and size belong beside it):

* ``count_parameters``: total, trainable, and per top-level component.
* ``count_flops``: forward FLOPs per image of one teacher-forced pass (encoder on the image, fusion,
  decoder over one caption of a typical length), counted by ``torch.utils.flop_counter.FlopCounterMode``.
  It counts matrix multiplications, convolutions and attention kernels (2 FLOPs per
  multiply-accumulate: ``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``convolution``,
  ``scaled_dot_product_attention``, ...); element-wise operations, normalisation, activations,
  softmax, pooling and embedding lookups are not counted. cuDNN is switched off while counting so
  that an RNN is seen as its matrix multiplications on every device.
* ``inference_ms_per_image``: wall time of ``model.generate`` on one fixed batch, in eval mode under
  ``torch.no_grad``: one warm-up call, then the median of ``repeats`` timed calls (CUDA synchronised),
  divided by the batch size. The run's ``DecodingConfig`` and its greedy twin (``beam_size=1``) are
  timed on the same batch.
* ``peak_memory_mb``: on CUDA ``torch.cuda.max_memory_allocated`` since ``reset_peak_memory``; on CPU
  the process's resident-set high-water mark (Linux ``VmHWM``, reset by ``reset_peak_memory`` where
  the kernel allows it; otherwise ``resource.getrusage``'s ``ru_maxrss`` since the process started).
  A reset cannot give back what earlier work in the same process still holds, so a grid runs each
  cell in a fresh process (``fusionbench.grid.execute``): the figure is then that cell's, including
  the interpreter with torch and Lightning imported (a few hundred MiB, the same for every cell).
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from fusionbench.decoding import DecodingConfig


def _unique_parameters(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for module in modules:
        for p in module.parameters():  # de-duplicates within a module; the dict across modules
            seen.setdefault(id(p), p)
    return list(seen.values())


def count_parameters(
    module: nn.Module, groups: Mapping[str, Sequence[nn.Module]] | None = None
) -> dict[str, Any]:
    """``{"total", "trainable", "components": {group: total}, "trainable_components": {group: trainable}}``.

    ``groups`` names the parts to count (a part may join several modules, e.g. both projections);
    by default every top-level child is a part. Shared parameters are counted once, in the totals
    and within a part. The one parameter counter: ``CaptioningModel.parameter_counts`` uses it too.
    """
    if groups is None:
        groups = {name: [child] for name, child in module.named_children()}
    params = {name: _unique_parameters(mods) for name, mods in groups.items()}
    everything = _unique_parameters([module])
    return {
        "total": sum(p.numel() for p in everything),
        "trainable": sum(p.numel() for p in everything if p.requires_grad),
        "components": {name: sum(p.numel() for p in ps) for name, ps in params.items()},
        "trainable_components": {
            name: sum(p.numel() for p in ps if p.requires_grad) for name, ps in params.items()
        },
    }


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _boxes_to(boxes: Sequence[Tensor] | None, device: torch.device) -> list[Tensor] | None:
    return None if boxes is None else [b.to(device) for b in boxes]


def count_flops(
    model: nn.Module,
    images: Tensor,
    boxes: Sequence[Tensor] | None = None,
    *,
    caption_length: int = 12,
    token_id: int | None = None,
) -> int:
    """Forward FLOPs per image of ``model(images, input_ids, boxes)`` (teacher forcing).

    ``input_ids`` is ``[B, caption_length]`` (the decoder input: BOS plus the words of a caption of
    typical length), filled with ``token_id`` (default: the tokenizer's BOS id); token values do not
    change the count. Runs in eval mode under ``torch.no_grad`` and restores the training flag.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if caption_length < 1:
        raise ValueError(f"caption_length must be >= 1, got {caption_length}")
    device = _device_of(model)
    if token_id is None:
        tokenizer = getattr(model, "tokenizer", None)
        token_id = int(getattr(tokenizer, "bos_id", 1))
    images = images.to(device)
    batch = len(images)
    input_ids = torch.full((batch, caption_length), token_id, dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), torch.backends.cudnn.flags(enabled=False), counter:
            model(images, input_ids, _boxes_to(boxes, device))
    finally:
        model.train(was_training)
    return int(round(counter.get_total_flops() / batch))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def inference_ms_per_image(
    model: nn.Module,
    images: Tensor,
    boxes: Sequence[Tensor] | None = None,
    *,
    decoding: DecodingConfig,
    warmup: int = 1,
    repeats: int = 3,
) -> float:
    """Milliseconds per image of ``model.generate(images, boxes, decoding)`` on this batch: median of
    ``repeats`` timed calls after ``warmup`` untimed ones, eval mode, ``torch.no_grad``."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device = _device_of(model)
    images = images.to(device)
    boxes = _boxes_to(boxes, device)
    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.no_grad():
            for _ in range(warmup):
                model.generate(images, boxes, decoding)
            _sync(device)
            for _ in range(repeats):
                start = time.perf_counter()
                model.generate(images, boxes, decoding)
                _sync(device)
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return 1000.0 * statistics.median(times) / len(images)


# ---------------------------------------------------------------------------------------------
# Peak memory
# ---------------------------------------------------------------------------------------------


def _vm_hwm_kb() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak_memory(device: torch.device | str | None = None) -> None:
    """Start a new peak-memory window: CUDA's peak statistics (of ``device``, or of every initialised
    CUDA device when ``device`` is None) and the process's RSS high-water mark (Linux: ``5`` to
    ``/proc/self/clear_refs``; where the kernel refuses, the mark counts from the process start)."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    if device is None and torch.cuda.is_available() and torch.cuda.is_initialized():
        for index in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(index)
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device | str | None = None) -> float:
    """Peak memory in MiB: ``torch.cuda.max_memory_allocated`` on a CUDA device, else peak process RSS."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    kb = _vm_hwm_kb()
    if kb is not None:
        return kb / 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, KiB elsewhere


#: How a CPU run's peak is scoped: what the leaderboard's legend repeats after the source.
PER_PROCESS = " of the run's own process (each grid cell runs in a fresh process)"


def peak_memory_source(device: torch.device | str | None = None) -> str:
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        return "torch.cuda.max_memory_allocated"
    return (
        "process RSS high-water mark (VmHWM)" if _vm_hwm_kb() is not None else "getrusage ru_maxrss"
    ) + PER_PROCESS


# ---------------------------------------------------------------------------------------------
# One run's cost block
# ---------------------------------------------------------------------------------------------


def typical_caption_length(token_lengths: Sequence[int]) -> int:
    """Rounded mean length of the decoder inputs (BOS + words) of the training captions."""
    if not token_lengths:
        return 12
    return max(1, int(round(sum(token_lengths) / len(token_lengths))))


def measure_model(
    model: nn.Module,
    images: Tensor,
    boxes: Sequence[Tensor] | None = None,
    *,
    decoding: DecodingConfig,
    caption_length: int = 12,
    device: torch.device | str | None = None,
    max_images: int = 16,
    repeats: int = 3,
) -> dict[str, Any]:
    """FLOPs per image and greedy/beam inference ms per image on the first ``max_images`` images.

    ``beam`` times ``decoding`` as given (the run's test-time search); ``greedy`` the same settings
    at ``beam_size=1``. The model is moved to ``device`` for timing (and back to where it was),
    FLOPs are counted on the same device. Returns the keys that go into ``metrics.json["cost"]``.
    """
    home = _device_of(model)
    device = torch.device(device) if device is not None else home
    images = images[:max_images]
    boxes = list(boxes[:max_images]) if boxes is not None else None
    model.to(device)
    try:
        flops = count_flops(model, images, boxes, caption_length=caption_length)
        greedy = inference_ms_per_image(
            model, images, boxes, decoding=replace(decoding, beam_size=1), repeats=repeats
        )
        beam = inference_ms_per_image(model, images, boxes, decoding=decoding, repeats=repeats)
    finally:
        model.to(home)
    return {
        "flops_per_image": flops,
        "flops_caption_length": caption_length,
        "greedy": greedy,
        "beam": beam,
        "setup": {
            "beam_size": int(decoding.beam_size),
            "max_len": int(decoding.max_len),
            "images": len(images),
            "repeats": int(repeats),
            "device": str(device),
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
        },
    }
