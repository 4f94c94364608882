"""What a run computes with on this host: its resolved precision and the CPU kernels torch picks.

Two facts decide whether two machines can produce a run's numbers bit for bit, beyond the config,
the seed and the package versions (``results.NUMERICS_PACKAGES``):

* torch's CPU kernels are chosen at import from the CPU's instruction set
  (``torch.backends.cpu.get_cpu_capability()``: ``AVX512``, ``AVX2``, ...). Vectorised reductions
  and matrix products round differently per set, and training amplifies the last-bit differences:
  the same cell scores about a point of CIDEr-D apart on an AVX512 and an AVX2 host. A run is
  deterministic per kernel set, not across them, so every run records it and the leaderboard and
  its staleness test compare like with like.
* The kernel set is not the whole story: two AVX512 hosts (an Intel Xeon with AMX and an AMD EPYC)
  trained the same fp32 cell to test CIDEr-D 106.5 and 103.7, because the BLAS and oneDNN pick
  different code paths (and blockings) per vendor, cache size and thread count. So every CPU run
  also records a ``fingerprint``: a hash of the exact bits a fixed set of the operations training
  uses (matrix products, convolution, LSTM, LayerNorm, softmax, their gradients; the same under
  bf16 autocast for a bf16 run) produce on this host, with this run's thread count. Hosts whose
  fingerprints differ cannot be expected to agree bit for bit; equal ones are the hosts to compare
  bit for bit (the fingerprint samples the kernels, it cannot prove two hosts agree on all of them).
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


FINGERPRINT_DIGITS = 10
"""Hex digits of the fingerprint kept: enough that two hosts' labels collide only by design."""


def numerics_fingerprint(precision: str) -> str:
    """A hash of the bits this host's CPU kernels give for a fixed computation, as training runs
    it with ``precision`` (resolved: ``32-true`` or ``bf16-mixed``) and the current thread count.

    Runs inside ``torch.random.fork_rng`` and seeds its own inputs, so recording it after training
    changes no number of the run. Shapes are those of a default-grid step (batch 16, width 128-512),
    since a BLAS picks its blocking, and with it the rounding, by shape."""
    import hashlib

    import torch
    import torch.nn.functional as F

    digest = hashlib.sha256()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        images = torch.randn(16, 16, 32, 32)
        tokens = torch.randn(16, 4, 128)
        conv = torch.randn(32, 16, 3, 3, requires_grad=True)
        w_in = torch.randn(512, 128, requires_grad=True)
        w_out = torch.randn(128, 512, requires_grad=True)
        w_vocab = torch.randn(500, 256, requires_grad=True)
        lstm = torch.nn.LSTMCell(128, 256)  # the LSTM decoder steps LSTMCells
        norm = torch.nn.LayerNorm(128)
        weights = [conv, w_in, w_out, w_vocab, *lstm.parameters(), *norm.parameters()]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.startswith("bf16")):
            pooled = F.conv2d(images, conv, padding=1).relu().flatten(2).mean(-1)  # (16, 32)
            hidden = F.linear(F.gelu(F.linear(norm(tokens), w_in)), w_out)  # (16, 4, 128)
            heads = hidden.view(16, 4, 4, 32).transpose(1, 2)
            attended = F.scaled_dot_product_attention(heads, heads, heads).transpose(1, 2).reshape(16, 4, 128)
            state, states = None, []
            for step in attended.unbind(1):
                state = lstm(step, state)
                states.append(state[0])
            states = torch.stack(states, 1)
            logits = F.log_softmax(F.linear(states, w_vocab), dim=-1)  # (16, 4, 500)
        loss = logits.float().logsumexp(-1).mean() + pooled.float().tanh().sum()
        grads = torch.autograd.grad(loss, weights)
        for tensor in (loss, *grads):
            digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:FINGERPRINT_DIGITS]


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
        "threads": torch.get_num_threads(),
    }
    if kind == "cuda":
        report["gpu"] = torch.cuda.get_device_name(torch.device(device))
    else:
        report["fingerprint"] = numerics_fingerprint(report["precision"])
    return report


def _hardware(report: Mapping[str, Any]) -> str:
    """What set a run's rounding: the CPU kernel set, or for a GPU run the GPU."""
    if report.get("device", "cpu") != "cpu":
        return str(report.get("gpu") or report.get("device"))
    return str(report.get("cpu_kernels"))


def numerics_label(report: Mapping[str, Any] | None) -> str | None:
    """A short label of a run's numerics, the leaderboard's ``numerics`` column: the CPU kernel set,
    precision and fingerprint (``AVX2 32-true 3f9a0c1b2d``; runs before the fingerprint have none),
    or for a GPU run the GPU and precision. Equal labels: the runs' hosts compute alike."""
    if not report:
        return None
    fingerprint = f" {report['fingerprint']}" if report.get("fingerprint") else ""
    return f"{_hardware(report)} {report.get('precision')}{fingerprint}"


def numerics_summary(reports: Iterable[Mapping[str, Any] | None]) -> str:
    """The leaderboard header's ``Numerics`` line: which kernels and precisions its cells ran with."""
    reports = list(reports)
    kernels = Counter(_hardware(r) for r in reports if r)
    precisions = Counter(str(r.get("precision")) for r in reports if r)
    if not kernels:
        return "not recorded"

    def counted(counter: Counter) -> str:
        return ", ".join(f"{k} ({n} cells)" for k, n in sorted(counter.items()))

    fingerprints = Counter(str(r["fingerprint"]) for r in reports if r and r.get("fingerprint"))
    missing = sum(1 for r in reports if not r)
    return (
        f"CPU kernels (GPU for a GPU run) {counted(kernels)}; precision {counted(precisions)}"
        + (f"; fingerprint {counted(fingerprints)}" if fingerprints else "")
        + (f"; {missing} cells did not record theirs" if missing else "")
        + ". A rerun can reproduce these numbers bit for bit only on a host with the same CPU kernels,"
        " precision and fingerprint (`fusionbench.numerics.numerics_fingerprint`: the bits this host's"
        " BLAS and oneDNN give for a fixed training step); on another, training rounds differently and"
        " scores move within the seed spread"
    )
