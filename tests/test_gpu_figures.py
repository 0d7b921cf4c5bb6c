"""GPU figures without a GPU: the FLOPs and MFU arithmetic against hand-computed figures
for bert-base, and the NVML sampler against a fake NVML module."""

import pytest

from harness.flops import layer_parameters, mfu_figures, peak_tflops, training_flops
from harness.models import load_model
from harness.nvml import NvmlSampler, power_integral_j


def test_bert_base_layer_parameters_are_the_published_85_05_m():
    model, _ = load_model("bert-base-uncased", weights="random", num_labels=2)
    assert layer_parameters(model) == 85_054_464


def test_flops_and_mfu_by_hand_for_bert_base_on_an_h100():
    # One sequence of 128 real tokens: 6 * 85,054,464 * 128 + 12 * 12 * 768 * 128^2.
    per_sequence = 6 * 85_054_464 * 128 + 12 * 12 * 768 * 128 * 128
    assert per_sequence == 65_321_828_352 + 1_811_939_328 == 67_133_767_680
    assert training_flops(85_054_464, 12, 768, 128, 128 * 128) == per_sequence
    # 3,000 such sequences in one second on an H100 SXM in bf16 (989.4 TFLOP/s dense).
    f = mfu_figures(layer_params=85_054_464, num_layers=12, hidden_size=768, real_tokens=3000 * 128,
                    sum_sq_lengths=3000 * 128 * 128, seconds=1.0, gpu_name="NVIDIA H100 80GB HBM3", precision="bf16")
    assert f["achieved_tflops"] == pytest.approx(201.401, abs=1e-3)
    assert f["mfu"] == pytest.approx(201.401 / 989.4, abs=1e-5)


@pytest.mark.parametrize("name, precision, tf32, peak", [
    ("NVIDIA H100 80GB HBM3", "bf16", False, 989.4),
    ("NVIDIA H100 PCIe", "fp16", False, 756.0),
    ("NVIDIA H200", "bf16", False, 989.4),
    ("NVIDIA A100-SXM4-80GB", "fp32", True, 156.0),
    ("NVIDIA A100-SXM4-80GB", "fp32", False, 19.5),
    ("NVIDIA A10G", "bf16", False, 70.0),
    ("NVIDIA L4", "fp16", False, 121.0),
    ("Tesla T4", "fp16", False, 65.0),
    ("Tesla V100-SXM2-16GB", "fp16", False, 125.0),
])
def test_peak_table(name, precision, tf32, peak):
    assert peak_tflops(name, precision, tf32)[0] == peak


def test_unknown_gpus_and_cpus_say_unknown():
    value, why = peak_tflops("NVIDIA GeForce GTX 1080", "fp16")
    assert value is None and "unknown GPU" in why
    assert peak_tflops("Tesla T4", "bf16")[0] is None
    f = mfu_figures(layer_params=1, num_layers=1, hidden_size=1, real_tokens=1, sum_sq_lengths=1, seconds=1.0,
                    gpu_name=None, precision="fp32")
    assert f["mfu"] is None and "no GPU" in f["mfu_note"] and f["achieved_tflops"] > 0


class FakeNvml:
    """Scripted NVML: power 300 W then 400 W, an energy counter, and a thermal throttle."""

    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, energy_counter=True, throttle=0):
        self.calls = 0
        self.energy_counter = energy_counter
        self.throttle = throttle
        self.energy_mj = 1_000_000

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        return f"gpu{index}"

    def nvmlDeviceGetMemoryInfo(self, handle):
        class Info:
            used = 40 * 2**30

        return Info()

    def nvmlDeviceGetPowerUsage(self, handle):
        self.calls += 1
        return 300_000 if self.calls == 1 else 400_000

    def nvmlDeviceGetClockInfo(self, handle, kind):
        return 1980

    def nvmlDeviceGetTemperature(self, handle, kind):
        return 61

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
        return self.throttle if self.calls > 1 else 0

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.energy_counter:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        self.energy_mj += 350_000  # 350 J between the two reads
        return self.energy_mj


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        self.t += 1.0
        return self.t


def test_energy_from_the_device_counter_and_no_throttling():
    sampler = NvmlSampler(FakeNvml(), 0, interval_s=10.0, clock=Clock())
    with sampler:
        pass
    figures = sampler.summary.figures(samples_trained=700)
    assert sampler.summary.energy_source == "counter"
    assert figures["energy_j"] == pytest.approx(350.0) and figures["energy_per_sample_j"] == pytest.approx(0.5)
    assert figures["peak_power_w"] == 400.0 and figures["peak_device_mem_used_bytes"] == 40 * 2**30
    assert figures["throttled"] is False and figures["temperature_max_c"] == 61


def test_energy_from_the_power_integral_and_a_thermal_throttle_flag():
    sampler = NvmlSampler(FakeNvml(energy_counter=False, throttle=0x40), 0, interval_s=10.0, clock=Clock())
    with sampler:
        pass
    summary = sampler.summary
    assert summary.energy_source == "power integral"
    # Samples at t=2 (300 W) and t=3 (400 W): trapezoid over one second = 350 J.
    assert summary.energy_j == pytest.approx(350.0)
    assert summary.throttled and summary.throttle_reasons == ["hw_thermal_slowdown"]


def test_power_integral_needs_two_samples():
    assert power_integral_j([]) is None
