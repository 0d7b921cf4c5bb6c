"""What a GPU is set to, beyond its name: the figures that make two "H200"s measure
differently.

Per device used: UUID, VBIOS, power limit (current, default, the board's range), application,
default and maximum clocks (a clock lock shows as application clocks away from their
default), ECC, MIG, compute mode, persistence and the PCIe link; for the machine: the
driver's CUDA version, ``CUDA_VISIBLE_DEVICES`` and how the GPUs used are joined (NVLink, or
PCIe through which bridge).  What NVML cannot tell is None, with the error kept, never a
guess.  ``SETTINGS`` are what ``env_changes`` reports when they move (a power cap lowered,
clocks locked); a MIG slice is keyed by its profile, never as the whole card.
"""

from __future__ import annotations

import os
from typing import Any

from .devices import handle_by_uuid, nvml_error_text, text
from .nvml import NvmlCalls

# per-device figures that are settings of the machine: a change is an environment change
SETTINGS = ("vbios", "power_limit_w", "power_limit_default_w", "app_clock_sm_mhz", "app_clock_mem_mhz",
            "ecc", "mig", "compute_mode", "persistence", "pcie_gen", "pcie_width")
COMPUTE_MODES = {0: "default", 1: "exclusive_thread", 2: "prohibited", 3: "exclusive_process"}
TOPOLOGY = {0: "same board", 10: "one PCIe switch", 20: "several PCIe switches", 30: "one host bridge",
            40: "one NUMA node", 50: "across NUMA nodes (SMP interconnect)"}
NVLINK_MAX_LINKS = 18


def _watts(milliwatts: Any) -> float | None:
    return round(float(milliwatts) / 1000.0, 1) if milliwatts is not None else None


def _on(value: Any) -> bool | None:
    return bool(value) if value is not None else None


def _pair(value: Any, index: int = 0) -> Any:
    """NVML's (current, pending) answers: the current one."""
    return value[index] if isinstance(value, (tuple, list)) else value


def device_identity(nvml: Any, handle: Any) -> dict[str, Any]:
    calls = NvmlCalls(nvml, handle)
    call = calls.call
    sm, mem = getattr(nvml, "NVML_CLOCK_SM", 1), getattr(nvml, "NVML_CLOCK_MEM", 2)
    constraints = call("nvmlDeviceGetPowerManagementLimitConstraints")
    is_mig = bool(call("nvmlDeviceIsMigDeviceHandle"))
    compute = call("nvmlDeviceGetComputeMode")
    out = {
        "uuid": _text_or_none(call("nvmlDeviceGetUUID")),
        "name": _text_or_none(call("nvmlDeviceGetName")),
        "vbios": _text_or_none(call("nvmlDeviceGetVbiosVersion")),
        "power_limit_w": _watts(call("nvmlDeviceGetPowerManagementLimit")),
        "power_limit_enforced_w": _watts(call("nvmlDeviceGetEnforcedPowerLimit")),
        "power_limit_default_w": _watts(call("nvmlDeviceGetPowerManagementDefaultLimit")),
        "power_limit_min_w": _watts(_pair(constraints, 0)) if constraints else None,
        "power_limit_max_w": _watts(_pair(constraints, 1)) if constraints else None,
        "app_clock_sm_mhz": call("nvmlDeviceGetApplicationsClock", sm),
        "app_clock_mem_mhz": call("nvmlDeviceGetApplicationsClock", mem),
        "default_app_clock_sm_mhz": call("nvmlDeviceGetDefaultApplicationsClock", sm),
        "max_clock_sm_mhz": call("nvmlDeviceGetMaxClockInfo", sm),
        "max_clock_mem_mhz": call("nvmlDeviceGetMaxClockInfo", mem),
        "ecc": _on(_pair(call("nvmlDeviceGetEccMode"))),
        "mig": is_mig or bool(_pair(call("nvmlDeviceGetMigMode"))),
        "mig_slice": is_mig,
        "compute_mode": COMPUTE_MODES.get(compute, compute) if compute is not None else None,
        "persistence": _on(call("nvmlDeviceGetPersistenceMode")),
        "pcie_gen": call("nvmlDeviceGetCurrPcieLinkGeneration"),
        "pcie_width": call("nvmlDeviceGetCurrPcieLinkWidth"),
    }
    clocks_locked = (out["app_clock_sm_mhz"] is not None and out["default_app_clock_sm_mhz"] is not None
                     and out["app_clock_sm_mhz"] != out["default_app_clock_sm_mhz"])
    out["clocks_set"] = clocks_locked
    out["errors"] = calls.error_list()
    return out


def _text_or_none(value: Any) -> str | None:
    return text(value) if value is not None else None


def cuda_driver_version(nvml: Any) -> str | None:
    """The CUDA version the driver supports (``13.0``), as nvidia-smi prints it."""
    try:
        value = int(nvml.nvmlSystemGetCudaDriverVersion())
    except Exception:
        return None
    return f"{value // 1000}.{value % 1000 // 10}"


def interconnect(nvml: Any, handles: list[Any]) -> dict[str, Any] | None:
    """How the GPUs used are joined: active NVLinks per GPU, and the closest common
    ancestor on the PCIe tree of each pair (None for one GPU)."""
    if len(handles) < 2:
        return None
    links, errors = [], []
    for handle in handles:
        active = 0
        for link in range(NVLINK_MAX_LINKS):
            try:
                active += int(bool(nvml.nvmlDeviceGetNvLinkState(handle, link)))
            except Exception as exc:  # past the device's last link, or no NVLink
                if link == 0:
                    errors.append(nvml_error_text("nvmlDeviceGetNvLinkState", exc))
                break
        links.append(active)
    pairs = []
    for i in range(len(handles)):
        for j in range(i + 1, len(handles)):
            try:
                level = int(nvml.nvmlDeviceGetTopologyCommonAncestor(handles[i], handles[j]))
                pairs.append(TOPOLOGY.get(level, str(level)))
            except Exception as exc:
                errors.append(nvml_error_text("nvmlDeviceGetTopologyCommonAncestor", exc))
                pairs.append(None)
    kind = "nvlink" if links and all(links) else ("pcie" if any(p is not None for p in pairs) else None)
    return {"kind": kind, "nvlinks_active": links, "pcie_paths": pairs, "errors": errors}


def identity(uuids: list[str | None], nvml: Any | None = None) -> dict[str, Any]:
    """The identity of the CUDA devices with these UUIDs (in CUDA's order)."""
    out: dict[str, Any] = {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "devices": [],
                           "cuda_driver_version": None, "interconnect": None, "errors": []}
    if nvml is None:
        try:
            import pynvml as nvml

            nvml.nvmlInit()
        except Exception as exc:
            out["errors"].append(nvml_error_text("nvmlInit", exc))
            return out
    out["cuda_driver_version"] = cuda_driver_version(nvml)
    handles = []
    for i, uuid in enumerate(uuids):
        try:
            handle = handle_by_uuid(nvml, uuid) if uuid else nvml.nvmlDeviceGetHandleByIndex(i)
        except Exception as exc:
            out["errors"].append(f"device {i}: {exc}")
            out["devices"].append({"uuid": uuid})
            continue
        handles.append(handle)
        out["devices"].append(device_identity(nvml, handle))
    out["interconnect"] = interconnect(nvml, handles)
    return out


def key_suffix(gpu: dict[str, Any]) -> str:
    """``MIG-1g.18gb`` for a MIG slice (its profile, else its memory), else nothing: a slice
    is never keyed as the whole card."""
    first = (gpu.get("devices") or [{}])[0]
    if not first.get("mig_slice"):
        return ""
    name = str(first.get("name") or "")
    profile = name.split("MIG", 1)[1].strip() if "MIG" in name else ""
    return f"MIG-{profile or 'slice'}"


def setting_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The settings that moved between two records (``gpu0.power_limit_w 700.0 -> 500.0``)."""
    out = []
    old_devices, new_devices = old.get("devices") or [], new.get("devices") or []
    for i, (a, b) in enumerate(zip(old_devices, new_devices)):
        out += [f"gpu{i}.{k} {a.get(k)} -> {b.get(k)}" for k in SETTINGS if k in a and k in b and a[k] != b[k]]
    for k in ("cuda_driver_version", "cuda_visible_devices"):
        if k in old and k in new and old[k] != new[k]:
            out.append(f"gpu.{k} {old[k]} -> {new[k]}")
    a, b = (old.get("interconnect") or {}).get("kind"), (new.get("interconnect") or {}).get("kind")
    if a != b and "interconnect" in old and "interconnect" in new:
        out.append(f"gpu.interconnect {a} -> {b}")
    return out
