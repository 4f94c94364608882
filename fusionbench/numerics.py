"""What a run computes with on this host: its resolved precision and the CPU kernels torch picks.

Two facts decide whether two machines can produce a run's numbers bit for bit, beyond the config,
the seed and the package versions (``results.NUMERICS_PACKAGES``):

* torch's CPU kernels are chosen at import from the CPU's instruction set
  (``torch.backends.cpu.get_cpu_capability()``: ``AVX512``, ``AVX2``, ...). Vectorised reductions
  and matrix products round differently per set, and training amplifies the last-bit differences:
  the same cell scores about a point of CIDEr-D apart on an AVX512 and an AVX2 host. A run is
  deterministic per kernel set, not across them, so every run records it and the leaderboard and
  its staleness test compare like with like.
* ``bf16-mixed`` is fast only where the hardware multiplies bf16 natively (oneDNN on CPUs with
  AVX512-BF16 or AMX; CUDA GPUs from Ampere on). Elsewhere the products are emulated and a
  Transformer cell trains about 10x slower than in fp32. ``bf16-mixed-if-native`` (what the default
  grid gives the Transformer and BERT decoders) resolves to ``bf16-mixed`` on such hardware and to
  ``32-true`` elsewhere, so the default grid takes its stated time on either kind of machine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

BF16_IF_NATIVE = "bf16-mixed-if-native"
"""A ``trainer.precision`` value of ours: ``bf16-mixed`` where bf16 is native, else ``32-true``."""


def bf16_native(accelerator: str) -> bool:
    """Whether ``accelerator`` (``trainer.accelerator``) multiplies bf16 in hardware here."""
    import torch  # here, not at the top: the leaderboard reads labels without importing torch

    if accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available()):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, accelerator: str) -> str:
    """The precision Lightning gets for ``trainer.precision``: ours resolved, Lightning's passed on."""
    if precision == BF16_IF_NATIVE:
        return "bf16-mixed" if bf16_native(accelerator) else "32-true"
    return precision


def cpu_kernels() -> str:
    """The instruction set of the CPU kernels torch dispatches to on this host (e.g. ``AVX2``)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def numerics_report(precision: str, accelerator: str, device: Any = "cpu") -> dict[str, Any]:
    """``metrics.json["numerics"]``: what this run's numbers were computed with on this host;
    ``device`` is the run's root device (a GPU run also records the GPU's name)."""
    import torch

    kind = torch.device(device).type
    report = {
        "precision": resolve_precision(precision, accelerator),
        "configured_precision": precision,
        "device": kind,
        "cpu_kernels": cpu_kernels(),
        "bf16_native": bf16_native(accelerator),
    }
    if kind == "cuda":
        report["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return report


def _hardware(report: Mapping[str, Any]) -> str:
    """What set a run's rounding: the CPU kernel set, or for a GPU run the GPU."""
    if report.get("device", "cpu") != "cpu":
        return str(report.get("gpu") or report.get("device"))
    return str(report.get("cpu_kernels"))


def numerics_label(report: Mapping[str, Any] | None) -> str | None:
    """A short label of a run's numerics, the leaderboard's ``numerics`` column: the CPU kernel set
    and precision (``AVX2 32-true``), or for a GPU run the GPU and precision."""
    if not report:
        return None
    return f"{_hardware(report)} {report.get('precision')}"


def numerics_summary(reports: Iterable[Mapping[str, Any] | None]) -> str:
    """The leaderboard header's ``Numerics`` line: which kernels and precisions its cells ran with."""
    reports = list(reports)
    kernels = Counter(_hardware(r) for r in reports if r)
    precisions = Counter(str(r.get("precision")) for r in reports if r)
    if not kernels:
        return "not recorded"

    def counted(counter: Counter) -> str:
        return ", ".join(f"{k} ({n} cells)" for k, n in sorted(counter.items()))

    missing = sum(1 for r in reports if not r)
    return (
        f"CPU kernels (GPU for a GPU run) {counted(kernels)}; precision {counted(precisions)}"
        + (f"; {missing} cells did not record theirs" if missing else "")
        + ". A rerun reproduces these numbers bit for bit on a host with the same CPU kernels"
        " (`torch.backends.cpu.get_cpu_capability()`) and precision; on another, training rounds"
        " differently and scores move within the seed spread"
    )
