"""GPU figures without a GPU: the FLOPs and MFU arithmetic against hand-computed figures
for bert-base, and the NVML sampler against a fake NVML module."""

import pytest

from harness.launch.watch import gpu_state, visible_gpu_handle
from harness.measure.devices import cuda_device_uuid
from harness.measure.flops import layer_parameters, mfu_figures, peak_tflops, training_flops
from harness.measure.nvml import NvmlSampler, open_sampler, power_integral_j
from harness.models import load_model


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
    ("NVIDIA H100 NVL", "bf16", False, 835.0),
    ("NVIDIA H200", "bf16", False, 989.4),
    ("NVIDIA H200 NVL", "bf16", False, 835.5),  # not the SXM H200's 989.4
    ("NVIDIA H200 NVL", "fp32", True, 417.5),
    ("NVIDIA A100-SXM4-80GB", "fp32", True, 156.0),
    ("NVIDIA A100-SXM4-80GB", "fp32", False, 19.5),
    ("NVIDIA A100 80GB PCIe", "bf16", False, 312.0),
    ("A100-SXM4-40GB", "bf16", False, 312.0),  # an older driver's name, without "NVIDIA "
    ("NVIDIA L40S", "bf16", False, 362.0),
    ("NVIDIA L40", "bf16", False, 181.0),  # not the L4's 121
    ("NVIDIA L4", "fp16", False, 121.0),
    ("NVIDIA A10G", "bf16", False, 70.0),
    ("NVIDIA A10", "bf16", False, 125.0),
    ("Tesla T4", "fp16", False, 65.0),
    ("Tesla V100-SXM2-16GB", "fp16", False, 125.0),
    ("Tesla V100-PCIE-32GB", "fp16", False, 112.0),
])
def test_peak_table(name, precision, tf32, peak):
    assert peak_tflops(name, precision, tf32)[0] == peak


def test_names_match_exactly_and_a_mig_slice_has_no_peak():
    value, why = peak_tflops("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "bf16")
    assert value is None and why.startswith("MIG slice: no published peak for a slice")
    value, why = peak_tflops("NVIDIA H100", "bf16")  # a fragment of several names is no name
    assert value is None and "unknown GPU 'NVIDIA H100'" in why and "NVIDIA H100 PCIe" in why


def test_mfu_against_a_measured_peak_beside_the_datasheets():
    f = mfu_figures(layer_params=85_054_464, num_layers=12, hidden_size=768, real_tokens=3000 * 128,
                    sum_sq_lengths=3000 * 128 * 128, seconds=1.0, gpu_name="NVIDIA H100 80GB HBM3", precision="bf16",
                    devices=2, measured_peak_tflops=700.0)
    assert f["measured_peak_tflops"] == 700.0
    assert f["mfu_measured_peak"] == pytest.approx(201.401 / 1400.0, abs=1e-6)
    assert f["mfu"] == pytest.approx(201.401 / 1978.8, abs=1e-6)
    without = mfu_figures(layer_params=1, num_layers=1, hidden_size=1, real_tokens=1, sum_sq_lengths=1, seconds=1.0,
                          gpu_name="NVIDIA L4", precision="fp16")
    assert without["measured_peak_tflops"] is None and without["mfu_measured_peak"] is None


def test_unknown_gpus_and_cpus_say_unknown():
    value, why = peak_tflops("NVIDIA GeForce GTX 1080", "fp16")
    assert value is None and "unknown GPU" in why
    assert peak_tflops("Tesla T4", "bf16")[0] is None
    f = mfu_figures(layer_params=1, num_layers=1, hidden_size=1, real_tokens=1, sum_sq_lengths=1, seconds=1.0,
                    gpu_name=None, precision="fp32")
    assert f["mfu"] is None and "no GPU" in f["mfu_note"] and f["achieved_tflops"] > 0


class NVMLError_NotSupported(Exception):  # noqa: N801 - pynvml's own name, which the error text carries
    def __str__(self):
        return "Not Supported"


class NVMLError_FunctionNotFound(Exception):  # noqa: N801
    pass


UUIDS = ["GPU-1a2b3c4d-0000-1111-2222-333344445555", "GPU-9f8e7d6c-0000-1111-2222-333344445555"]


class FakeNvml:
    """Scripted NVML: power 300 W then 400 W, an energy counter, and a thermal throttle.
    Two devices, by index and by UUID; ``events`` adds the newer clocks-event call."""

    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, energy_counter=True, throttle=0, events=None):
        self.calls = 0
        self.energy_counter = energy_counter
        self.throttle = throttle
        self.energy_mj = 1_000_000
        if events is not None:  # an exception class to raise, or a mask
            self.nvmlDeviceGetCurrentClocksEventReasons = self._events(events)

    def _events(self, events):
        def read(handle):
            if isinstance(events, type):
                raise events()
            return events

        return read

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return len(UUIDS)

    def nvmlDeviceGetHandleByIndex(self, index):
        return f"gpu{index}"

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid not in UUIDS:
            raise RuntimeError("NVML_ERROR_NOT_FOUND")
        return f"gpu{UUIDS.index(uuid)}"

    def nvmlDeviceGetUUID(self, handle):
        return UUIDS[int(handle.removeprefix("gpu"))]

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

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return 700_000

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
    assert figures["throttle_unknown"] is None and figures["nvml_errors"] == []
    assert figures["nvml_device_uuid"] == UUIDS[0]


def test_energy_three_ways_the_counter_preferred():
    sampler = NvmlSampler(FakeNvml(), 0, interval_s=10.0, clock=Clock())
    with sampler:
        pass
    figures = sampler.summary.figures(samples_trained=700)
    # The counter: 350 J.  Samples at t=2 (300 W) and t=3 (400 W): the trapezoid is 350 J,
    # mean power 350 W over the one sampled second is 350 J.
    assert figures["energy_counter_j"] == pytest.approx(350.0)
    assert figures["energy_integral_j"] == pytest.approx(350.0)
    assert figures["energy_mean_power_j"] == pytest.approx(350.0)
    assert figures["sampled_seconds"] == pytest.approx(1.0)
    assert figures["energy_j"] == figures["energy_counter_j"] and figures["energy_source"] == "counter"


def test_without_a_counter_the_integral_is_energy_and_the_error_is_listed():
    sampler = NvmlSampler(FakeNvml(energy_counter=False), 0, interval_s=10.0, clock=Clock())
    with sampler:
        pass
    figures = sampler.summary.figures(samples_trained=0)
    assert figures["energy_counter_j"] is None and figures["energy_source"] == "power integral"
    assert figures["energy_j"] == figures["energy_integral_j"] == pytest.approx(350.0)
    assert figures["energy_per_sample_j"] is None
    assert figures["nvml_errors"] == ["nvmlDeviceGetTotalEnergyConsumption: RuntimeError (NVML_ERROR_NOT_SUPPORTED)"]


def test_a_failed_throttle_read_is_unknown_not_unthrottled():
    sampler = NvmlSampler(FakeNvml(events=NVMLError_NotSupported), 0, interval_s=10.0, clock=Clock())
    with sampler:
        pass
    summary = sampler.summary
    assert [s.throttle_mask for s in summary.samples] == [None, None]
    assert summary.throttled is None and summary.throttle_reasons == []
    error = "nvmlDeviceGetCurrentClocksEventReasons: NVMLError_NotSupported (Not Supported)"
    assert summary.nvml_errors == [error]
    assert summary.throttle_unknown == f"throttle reasons unreadable in 2 of 2 samples: {error}"
    assert summary.figures()["throttled"] is None
    # The same call from the watch: unknown (None), not [] (not throttled), and why.
    state = gpu_state(FakeNvml(events=NVMLError_NotSupported), "gpu0")
    assert state["throttle_reasons"] is None and state["nvml_errors"] == [error]


def test_clocks_event_reasons_preferred_and_throttle_reasons_when_the_driver_lacks_them():
    nvml = FakeNvml(events=0x4)  # the newer call says power cap; the older one (0) is not asked
    sampler = NvmlSampler(nvml, 0, interval_s=10.0, clock=Clock())
    with sampler:
        pass
    assert sampler.summary.throttle_reasons == ["sw_power_cap"] and sampler.summary.throttled is True
    old_driver = FakeNvml(throttle=0x40, events=NVMLError_FunctionNotFound)
    old_driver.calls = 2
    assert gpu_state(old_driver, "gpu0")["throttle_reasons"] == ["hw_thermal_slowdown"]
    assert gpu_state(old_driver, "gpu0")["nvml_errors"] == []


def test_the_sampler_finds_its_device_by_uuid_with_or_without_the_prefix():
    for uuid in (UUIDS[1], UUIDS[1].removeprefix("GPU-")):
        sampler = NvmlSampler(FakeNvml(), 0, uuid=uuid)
        assert sampler.handle == "gpu1" and sampler.summary.device_uuid == UUIDS[1]
    lost = NvmlSampler(FakeNvml(), 0, uuid="GPU-00000000-dead-beef-0000-000000000000")
    assert lost.handle == "gpu0"  # the index is the fallback, and the figures say so
    assert "sampling NVML device 0 instead" in lost.calls.errors["nvmlDeviceGetHandleByUUID"]


def test_open_sampler_takes_the_uuid():
    import inspect

    assert list(inspect.signature(open_sampler).parameters) == ["device_index", "interval_s", "uuid"]


def test_cuda_device_uuid_in_nvmls_form(monkeypatch):
    import torch

    class Properties:
        def __init__(self, uuid):
            self.uuid = uuid

    bare = UUIDS[0].removeprefix("GPU-")
    for given in (bare, UUIDS[0]):
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i, given=given: Properties(given))
        assert cuda_device_uuid(0) == UUIDS[0]
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: object())  # a torch without uuid
    assert cuda_device_uuid(0) is None


class MigNvml(FakeNvml):
    """One GPU with two MIG slices, addressable by new-style MIG UUID or by the older
    ``MIG-GPU-<uuid>/<gi>/<ci>`` form."""

    MIGS = {"MIG-11111111-2222-3333-4444-555555555555": ("mig0", 1, 0),
            "MIG-66666666-2222-3333-4444-555555555555": ("mig1", 2, 0)}

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid in self.MIGS:
            return self.MIGS[uuid][0]
        return super().nvmlDeviceGetHandleByUUID(uuid)

    def nvmlDeviceGetMaxMigDeviceCount(self, handle):
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle, i):
        if i >= len(self.MIGS):
            raise RuntimeError("NVML_ERROR_NOT_FOUND")
        return f"mig{i}"

    def nvmlDeviceGetGpuInstanceId(self, handle):
        return {h: gi for h, gi, _ in self.MIGS.values()}[handle]

    def nvmlDeviceGetComputeInstanceId(self, handle):
        return {h: ci for h, _, ci in self.MIGS.values()}[handle]


@pytest.mark.parametrize("visible, handle", [
    (None, "gpu0"),
    ("1", "gpu1"),
    (f"{UUIDS[1]},{UUIDS[0]}", "gpu1"),
    (UUIDS[1].removeprefix("GPU-"), "gpu1"),  # without the prefix
    ("GPU-9f8e", "gpu1"),  # a unique prefix, as CUDA allows
    ("MIG-66666666-2222-3333-4444-555555555555", "mig1"),
    ("66666666-2222-3333-4444-555555555555", "mig1"),  # a MIG UUID without its prefix
    (f"MIG-{UUIDS[0]}/2/0", "mig1"),  # the pre-R470 MIG form
])
def test_the_watch_follows_cuda_visible_devices(monkeypatch, visible, handle):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert visible_gpu_handle(MigNvml()) == handle


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
