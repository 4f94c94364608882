"""``bf16-mixed-if-native`` and the numerics a run records (``fusionbench.numerics``)."""

import torch

from fusionbench import numerics
from fusionbench.config import load_config
from fusionbench.experiment import device_kwargs


def test_bf16_if_native_follows_this_hosts_hardware(tiny_config):
    """On this host: bf16 autocast exactly where oneDNN multiplies bf16 natively, else fp32, so the
    default grid's Transformer/BERT cells never run emulated bf16 (~10x slower)."""
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    cfg = load_config(tiny_config, ["trainer.precision=bf16-mixed-if-native"])
    assert device_kwargs(cfg)["precision"] == ("bf16-mixed" if native else "32-true")
    assert numerics.bf16_native("cpu") == native
    report = numerics.numerics_report("bf16-mixed-if-native", "cpu")
    assert report["configured_precision"] == "bf16-mixed-if-native"
    assert report["cpu_kernels"] == torch.backends.cpu.get_cpu_capability()


def test_bf16_if_native_resolves_by_the_hardware_answer(monkeypatch):
    """Both branches (this host can only show one); Lightning's own values pass through unchanged."""
    for native, expected in ((True, "bf16-mixed"), (False, "32-true")):
        monkeypatch.setattr(numerics, "bf16_native", lambda accelerator, n=native: n)
        assert numerics.resolve_precision("bf16-mixed-if-native", "cpu") == expected
        assert numerics.resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"  # asked for: kept
        assert numerics.resolve_precision("32-true", "cpu") == "32-true"


def test_the_leaderboards_numerics_line_counts_kernels_and_precisions():
    reports = [
        {"cpu_kernels": "AVX2", "precision": "32-true"},
        {"cpu_kernels": "AVX2", "precision": "bf16-mixed"},
        {"cpu_kernels": "AVX2", "precision": "32-true"},
        None,
    ]
    line = numerics.numerics_summary(reports)
    assert line.startswith(
        "CPU kernels (GPU for a GPU run) AVX2 (3 cells); precision 32-true (2 cells), bf16-mixed (1 cells)"
    )
    assert (
        "1 cells did not record theirs" in line
        and "bit for bit" in line
        and "fingerprint" not in line.split(".")[0]
    )
    assert numerics.numerics_summary([None]) == "not recorded"
    assert numerics.numerics_label(reports[1]) == "AVX2 bf16-mixed"
    gpu = {"device": "cuda", "gpu": "NVIDIA H200", "cpu_kernels": "AVX2", "precision": "bf16-mixed"}
    assert (
        numerics.numerics_label(gpu) == "NVIDIA H200 bf16-mixed"
    )  # a GPU run: the CPU's kernels don't set it


def test_the_fingerprint_is_this_hosts_and_changes_no_number_of_the_run():
    """Recorded after training: it must not consume the run's random numbers, and it must be the
    same every time on one host, with one thread count and precision (what the staleness test and
    the Numerics line compare); bf16 autocast and fp32 are different computations."""
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    first = numerics.numerics_fingerprint("32-true")
    assert torch.equal(torch.rand(3), expected)
    assert numerics.numerics_fingerprint("32-true") == first
    assert len(first) == numerics.FINGERPRINT_DIGITS and int(first, 16) >= 0
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():  # emulated bf16 on other hosts: slow, skip
        assert numerics.numerics_fingerprint("bf16-mixed") != first

    report = numerics.numerics_report("32-true", "cpu")
    assert report["fingerprint"] == first and report["threads"] == torch.get_num_threads()
    label = numerics.numerics_label(report)
    assert label == f"{report['cpu_kernels']} 32-true {first}"
    other_host = {**report, "fingerprint": "0" * numerics.FINGERPRINT_DIGITS}
    assert numerics.numerics_label(other_host) != label  # same kernel set, other BLAS path: unlike
    line = numerics.numerics_summary([report, report])
    assert f"fingerprint {first} (2 cells)" in line
