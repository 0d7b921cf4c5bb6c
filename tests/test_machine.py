"""A real user's machine: which CPU generation and GPU settings a record names, which harness
ran, where a project is, and a night's progress as it happens."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.judge.gate import env_changes
from harness.measure import cpu, gpu_identity
from harness.measure.env import environment, hardware_key, harness_label
from harness.project import matrix_path, project_root
from harness.report.live import Live, NightClock
from harness.spec import SpecError

FIXTURES = Path(__file__).parent / "machines"


def _cpu_env(text: str) -> dict:
    return {"cpu_count": 2, "cpu_model": cpu.parse_cpuinfo(text).get("model name"), "cpu": cpu.identity(text)}


def test_two_epyc_generations_behind_the_same_brand_have_two_hardware_keys():
    """A virtual machine shows `AMD EPYC` for Milan and Genoa alike; family and model do not lie."""
    milan = (FIXTURES / "cpuinfo-epyc-milan.txt").read_text()
    genoa = (FIXTURES / "cpuinfo-epyc-genoa.txt").read_text()
    a, b = _cpu_env(milan), _cpu_env(genoa)
    assert a["cpu_model"] == b["cpu_model"] == "AMD EPYC"
    assert (a["cpu"]["generation"], a["cpu"]["isa_tier"]) == ("zen3", "avx2")
    assert (b["cpu"]["generation"], b["cpu"]["isa_tier"]) == ("zen4", "avx512bf16")
    assert hardware_key(a) == "cpu-2x-AMD-EPYC-zen3-avx2"
    assert hardware_key(b) == "cpu-2x-AMD-EPYC-zen4-avx512bf16"
    assert b["cpu"]["microcode"] == "0xa101148" and "avx512_bf16" in b["cpu"]["isa"]
    # a microcode update on the same generation keeps the key and is an environment change
    patched = _cpu_env(milan.replace("0x1000065", "0x10001b4"))
    assert hardware_key(patched) == hardware_key(a)
    assert "cpu.microcode 0x1000065 -> 0x10001b4" in env_changes(a, patched)


def test_intel_generations_and_amx_are_told_apart():
    spr = cpu.identity((FIXTURES / "cpuinfo-xeon-sapphirerapids.txt").read_text())
    assert spr["generation"] == "sapphirerapids" and spr["isa_tier"] == "amx"
    assert cpu.generation("GenuineIntel", 6, 0x55, 7) == "cascadelake"
    assert cpu.generation("GenuineIntel", 6, 0x55, 4) == "skylake-sp"
    unknown = cpu.identity("vendor_id : NewVendor\ncpu family : 99\nmodel : 3\nflags : avx2 fma\n\n")
    assert unknown["generation"] == "f99m3" and unknown["generation_known"] is False


def test_this_machines_cpu_key_names_its_generation():
    env = environment()
    if not Path(cpu.CPUINFO).is_file() or env.get("gpu_count"):
        pytest.skip("needs a Linux CPU machine")
    ident = env["cpu"]
    assert ident["family"] is not None and ident["model"] is not None
    assert env["hardware_key"].endswith(cpu.key_suffix(ident)) and ident["generation"] in env["hardware_key"]


class RecordedNvml:
    """pynvml as it answered on the H200 of first light (results/first-light/20261130/
    nvidia-smi-call1.txt), with a power cap, clocks or MIG changed where a test says so."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2

    class NVMLError_NotSupported(Exception):  # noqa: N801 - pynvml's name
        pass

    def __init__(self, count=1, power_w=700.0, app_sm=1980, mig=False, nvlinks=18):
        self.count, self.power_w, self.app_sm, self.mig, self.nvlinks = count, power_w, app_sm, mig, nvlinks

    def nvmlSystemGetCudaDriverVersion(self):  # noqa: N802
        return 13000

    def nvmlDeviceGetHandleByUUID(self, uuid):  # noqa: N802
        if not uuid.startswith(("GPU-719feef4", "MIG-")):
            raise self.NVMLError_NotSupported("not found")
        return uuid

    def nvmlDeviceGetHandleByIndex(self, i):  # noqa: N802
        return f"GPU-719feef4-{i}"

    def nvmlDeviceGetUUID(self, h):  # noqa: N802
        return h

    def nvmlDeviceGetName(self, h):  # noqa: N802
        return "NVIDIA H200 MIG 1g.18gb" if self.mig else "NVIDIA H200"

    def nvmlDeviceGetVbiosVersion(self, h):  # noqa: N802
        return "96.00.A5.00.1A"

    def nvmlDeviceGetPowerManagementLimit(self, h):  # noqa: N802
        return int(self.power_w * 1000)

    nvmlDeviceGetEnforcedPowerLimit = nvmlDeviceGetPowerManagementLimit

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h):  # noqa: N802
        return 700000

    def nvmlDeviceGetPowerManagementLimitConstraints(self, h):  # noqa: N802
        return (200000, 700000)

    def nvmlDeviceGetApplicationsClock(self, h, kind):  # noqa: N802
        return self.app_sm if kind == self.NVML_CLOCK_SM else 3201

    def nvmlDeviceGetDefaultApplicationsClock(self, h, kind):  # noqa: N802
        return 1980 if kind == self.NVML_CLOCK_SM else 3201

    def nvmlDeviceGetMaxClockInfo(self, h, kind):  # noqa: N802
        return 1980 if kind == self.NVML_CLOCK_SM else 3201

    def nvmlDeviceGetEccMode(self, h):  # noqa: N802
        return (1, 1)

    def nvmlDeviceIsMigDeviceHandle(self, h):  # noqa: N802
        return self.mig

    def nvmlDeviceGetMigMode(self, h):  # noqa: N802
        return (int(self.mig), int(self.mig))

    def nvmlDeviceGetComputeMode(self, h):  # noqa: N802
        return 0

    def nvmlDeviceGetPersistenceMode(self, h):  # noqa: N802
        return 1

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h):  # noqa: N802
        return 5

    def nvmlDeviceGetCurrPcieLinkWidth(self, h):  # noqa: N802
        return 16

    def nvmlDeviceGetNvLinkState(self, h, link):  # noqa: N802
        if link >= self.nvlinks:
            raise self.NVMLError_NotSupported("Not Supported")
        return 1

    def nvmlDeviceGetTopologyCommonAncestor(self, a, b):  # noqa: N802
        return 40


def _gpu_env(nvml: RecordedNvml, uuids: list[str]) -> dict:
    gpu = gpu_identity.identity(uuids, nvml=nvml)
    return {"gpu_count": len(uuids), "gpu_name": "NVIDIA H200", "gpu": gpu}


def test_gpu_settings_are_recorded_and_a_lowered_power_cap_is_an_environment_change():
    before = _gpu_env(RecordedNvml(), ["GPU-719feef4-e3e4-8252-3d42-f912aa647a40"])
    device = before["gpu"]["devices"][0]
    assert device["vbios"] == "96.00.A5.00.1A" and device["power_limit_w"] == 700.0
    assert (device["power_limit_min_w"], device["power_limit_max_w"]) == (200.0, 700.0)
    assert device["app_clock_sm_mhz"] == 1980 and device["clocks_set"] is False
    assert device["ecc"] is True and device["mig"] is False and device["persistence"] is True
    assert device["compute_mode"] == "default" and (device["pcie_gen"], device["pcie_width"]) == (5, 16)
    assert before["gpu"]["cuda_driver_version"] == "13.0" and device["errors"] == []
    assert hardware_key(before) == "1xNVIDIA-H200"

    capped = _gpu_env(RecordedNvml(power_w=500.0, app_sm=1410), ["GPU-719feef4-e3e4-8252-3d42-f912aa647a40"])
    assert capped["gpu"]["devices"][0]["clocks_set"] is True
    changes = env_changes(before, capped)
    assert "gpu0.power_limit_w 700.0 -> 500.0" in changes and "gpu0.app_clock_sm_mhz 1980 -> 1410" in changes
    assert hardware_key(capped) == hardware_key(before)  # same card, set differently: judged, and the change said


def test_a_mig_slice_is_never_keyed_as_the_whole_card_and_two_gpus_say_how_they_are_joined():
    mig = _gpu_env(RecordedNvml(mig=True), ["MIG-5c1e2a9b-0000"])
    assert mig["gpu"]["devices"][0]["mig_slice"] is True
    assert hardware_key(mig) == "1xNVIDIA-H200-MIG-1g.18gb"

    pair = gpu_identity.identity(["GPU-719feef4-a", "GPU-719feef4-b"], nvml=RecordedNvml())
    assert pair["interconnect"]["kind"] == "nvlink" and pair["interconnect"]["nvlinks_active"] == [18, 18]
    pcie = gpu_identity.identity(["GPU-719feef4-a", "GPU-719feef4-b"], nvml=RecordedNvml(nvlinks=0))
    assert pcie["interconnect"]["kind"] == "pcie" and pcie["interconnect"]["pcie_paths"] == ["one NUMA node"]


def test_no_nvml_leaves_the_settings_unknown_with_the_reason():
    class Broken:
        def nvmlSystemGetCudaDriverVersion(self):  # noqa: N802
            raise RuntimeError("driver gone")

        def nvmlDeviceGetHandleByUUID(self, uuid):  # noqa: N802
            raise RuntimeError("GPU is lost")

        def nvmlDeviceGetCount(self):  # noqa: N802
            raise RuntimeError("GPU is lost")

    out = gpu_identity.identity(["GPU-1"], nvml=Broken())
    assert out["cuda_driver_version"] is None and out["devices"] == [{"uuid": "GPU-1"}]
    assert "GPU is lost" in out["errors"][0]


def test_a_moved_data_or_weights_revision_and_another_harness_are_environment_changes():
    old = {"sources": {"data": "hub:nyu-mll/glue@aaaa/mrpc", "checkpoint": "hub:google-bert/bert-base-uncased@1111"},
           "harness_commit": None, "harness": {"version": "0.1.0", "files_sha256": "ab" * 32}}
    new = {"sources": {"data": "hub:nyu-mll/glue@bbbb/mrpc", "checkpoint": "hub:google-bert/bert-base-uncased@1111"},
           "harness_commit": None, "harness": {"version": "0.1.0", "files_sha256": "cd" * 32}}
    changes = env_changes(old, new)
    assert "data hub:nyu-mll/glue@aaaa/mrpc -> hub:nyu-mll/glue@bbbb/mrpc" in changes
    assert not any(c.startswith("checkpoint") for c in changes)
    assert harness_label(old) == "0.1.0+sha256:abababababab"
    assert any(c.startswith("harness 0.1.0+sha256:abab") for c in changes)


def test_which_harness_ran_is_always_recorded():
    ident = environment()["harness"]
    assert Path(ident["path"]) == Path(__file__).resolve().parents[1] / "harness"
    assert len(ident["files_sha256"]) == 64 and ident["files"] > 50 and ident["version"]


# ---------------------------------------------------------------- where a project is


def test_one_rule_finds_the_project_root_from_any_folder_below_it(tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_PROJECT_DIR", raising=False)
    (tmp_path / "repo" / "benchmarks").mkdir(parents=True)
    (tmp_path / "repo" / "src" / "deep").mkdir(parents=True)
    assert project_root(tmp_path / "repo" / "src" / "deep") == tmp_path / "repo"
    monkeypatch.chdir(tmp_path / "repo" / "src")
    assert project_root() == tmp_path / "repo"
    # the project's own matrix wins over the shipped one of the same name; the shipped ones stay reachable
    (tmp_path / "repo" / "benchmarks" / "smoke.toml").write_text("[axes]\nbatch_size = [8]\n")
    assert matrix_path("smoke") == tmp_path / "repo" / "benchmarks" / "smoke.toml"
    assert matrix_path("nightly").parent.name == "matrices" and matrix_path("nightly").is_file()
    with pytest.raises(SpecError, match=r"known names: \['gpu-slice', 'nightly', 'smoke'\]"):
        matrix_path("nighty")
    monkeypatch.setenv("HARNESS_PROJECT_DIR", str(tmp_path / "elsewhere"))
    assert project_root() == tmp_path / "elsewhere"


def test_every_command_defaults_to_the_projects_results(tmp_path, monkeypatch, capsys):
    from harness.__main__ import main

    monkeypatch.delenv("HARNESS_PROJECT_DIR", raising=False)
    (tmp_path / "results" / "runs").mkdir(parents=True)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert main(["changes"]) == 0, capsys.readouterr()  # <root>/results, not sub/results (which does not exist)


# ---------------------------------------------------------------- a night you can watch


def test_the_night_clock_estimates_from_baselines_and_tonights_cells():
    now = [0.0]
    clock = NightClock(["a", "b", "c"], recorded_s=lambda c: {"b": 100.0}.get(c), now=lambda: now[0])
    assert clock.begin("a").endswith("night 0:00, an estimate once a cell has ended")

    class Done:
        id, status, reason, verdict, metrics = "a", "ok", None, None, {"train_samples_per_s": 12.5}
        spec = type("S", (), {"weights": "random"})()

    now[0] = 40.0
    line = clock.end(Done())
    # b from its baseline (100 s), c from tonight's mean (40 s)
    assert line.startswith("[1/3] a: measured, 12.5 samples/s, in 0:40 | night 0:40, about 2:20 left"), line
    now[0] = 70.0
    assert clock.begin("b").startswith("[2/3] b: started (its baseline took 1:40)")


def test_a_terminal_overwrites_passing_lines_and_a_log_keeps_them():
    out = []
    tty = Live(lambda text, newline: out.append((text, newline)), tty=True)
    tty.passing("run 1/3")
    tty.passing("run 2/3")
    tty.line("done")
    assert out == [("\r\x1b[Krun 1/3", False), ("\r\x1b[Krun 2/3", False), ("\r\x1b[Kdone", True)]
    out.clear()
    log = Live(lambda text, newline: out.append((text, newline)), tty=False)
    log.passing("run 1/3")
    log.line("done")
    assert out == [("run 1/3", True), ("done", True)]


def test_a_runs_output_captured_to_a_file_shows_each_cell_start_and_verdict_as_it_happens(bench_project, tmp_path):
    bench = bench_project("watch", 6, 'batch_size = [4, 8]\n')
    log = tmp_path / "night.log"
    with log.open("w") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "pytest", "--matrix", "watch", "-p", "no:cacheprovider"],
                                cwd=bench.path, stdout=handle, stderr=subprocess.STDOUT)
        seen_second_start_while_running = None
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            text = log.read_text()
            if "[2/2] " in text and "bs8-fp32: started" in text and seen_second_start_while_running is None:
                seen_second_start_while_running = text
            time.sleep(0.2)
        proc.wait(timeout=60)
    text = log.read_text()
    assert proc.returncode in (0, 1), text  # `new` cells skip; nothing fails
    assert seen_second_start_while_running is not None, text
    # before the second cell had ended, the first cell's start and end (figures, verdict) were in the log
    first = [line for line in seen_second_start_while_running.splitlines() if line.startswith("[1/2] ")]
    assert "-dynamic-bs4-fp32: started" in first[0], first
    assert "-dynamic-bs4-fp32: new, " in first[-1] and " samples/s" in first[-1] and " in 0:" in first[-1], first
    second_start = next(line for line in seen_second_start_while_running.splitlines() if line.startswith("[2/2] "))
    assert "about " in second_start and "left" in second_start, second_start
    assert any(line.startswith("[2/2] ") and "-dynamic-bs8-fp32: new, " in line for line in text.splitlines()), text
    assert "\x1b[K" not in text  # a log gets plain lines
