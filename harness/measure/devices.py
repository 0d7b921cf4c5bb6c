"""Which GPU is which: a CUDA device's UUID, and NVML's handle for a UUID.

NVML's indices follow the PCI bus; CUDA's ordinals follow CUDA_VISIBLE_DEVICES and
CUDA_DEVICE_ORDER; the two disagree whenever those reorder the devices.  A device's UUID is
the same to both, so the sampler (``nvml.py``) and the machine watch (``launch/watch.py``)
find their device by it.
"""

from __future__ import annotations

from typing import Any

UUID_PREFIXES = ("GPU-", "MIG-")


def nvml_error_text(fn: str, exc: BaseException) -> str:
    """``nvmlDeviceGetPowerUsage: NVMLError_NotSupported (Not Supported)``: the function, the
    error's class (pynvml has one per NVML return code) and its text."""
    name, said = type(exc).__name__, str(exc)
    return f"{fn}: {name} ({said})" if said and said != name else f"{fn}: {name}"


def normalise_uuid(uuid: str) -> str:
    """NVML's form of a device UUID: ``GPU-<hex with dashes>`` (``MIG-...`` kept as it is).
    torch prints the bare UUID or, in some builds, with the ``GPU-`` prefix."""
    uuid = uuid.strip()
    return uuid if uuid.startswith(UUID_PREFIXES) else f"GPU-{uuid}"


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def handle_by_uuid(nvml: Any, uuid: str) -> Any:
    """The NVML handle of the device with this UUID, with or without its prefix.

    A bare UUID is tried as a GPU's, then as a MIG instance's (CUDA reports a MIG instance's
    UUID bare too).  A UUID NVML does not know whole is then matched as a unique prefix of a
    device's UUID, as CUDA_VISIBLE_DEVICES allows (``GPU-8932f937``).  Raises LookupError
    naming what was tried."""
    bare = uuid.strip()
    if bare.startswith("MIG-GPU-") and "/" in bare:
        return _legacy_mig_handle(nvml, bare)
    candidates = [bare] if bare.startswith(UUID_PREFIXES) else [f"{p}{bare}" for p in UUID_PREFIXES]
    errors = []
    for candidate in candidates:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(candidate)
        except Exception as exc:
            errors.append(nvml_error_text(f"nvmlDeviceGetHandleByUUID({candidate})", exc))
    try:
        matches = []
        for i in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            if any(text(nvml.nvmlDeviceGetUUID(handle)).startswith(c) for c in candidates):
                matches.append(handle)
    except Exception as exc:
        errors.append(nvml_error_text("nvmlDeviceGetUUID (by prefix)", exc))
        matches = []
    if len(matches) == 1:
        return matches[0]
    why = f"{len(matches)} devices' UUIDs start with it" if matches else "; ".join(errors)
    raise LookupError(f"no single NVML device with UUID {uuid!r}: {why}")


def _legacy_mig_handle(nvml: Any, entry: str) -> Any:
    """``MIG-GPU-<uuid>/<GPU instance>/<compute instance>``, the MIG form of drivers before
    R470 (CUDA_VISIBLE_DEVICES still accepts it): the parent's MIG device with those ids."""
    try:
        parent_uuid, gpu_instance, compute_instance = entry.removeprefix("MIG-").split("/")
        parent = nvml.nvmlDeviceGetHandleByUUID(parent_uuid)
        for i in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(parent))):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, i)
            except Exception:  # an empty slot
                continue
            ids = (int(nvml.nvmlDeviceGetGpuInstanceId(mig)), int(nvml.nvmlDeviceGetComputeInstanceId(mig)))
            if ids == (int(gpu_instance), int(compute_instance)):
                return mig
    except Exception as exc:
        raise LookupError(f"no NVML device for {entry!r}: {nvml_error_text('MIG lookup', exc)}") from exc
    raise LookupError(f"no NVML device for {entry!r}: no MIG device with those instance ids")


def cuda_device_uuid(index: int) -> str | None:
    """The UUID of CUDA device ``index`` in NVML's form (``GPU-...``), from torch; None when
    this torch's device properties have no ``uuid`` (older builds)."""
    import torch

    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return normalise_uuid(str(uuid)) if uuid is not None else None
