"""What is measured: step timing and counting (``timing``), the GPU through NVML (``nvml``),
FLOPs and MFU (``flops``), the environment record (``env``), the device's ceilings
(``ceilings``) and the quality metrics of an evaluation (``metrics``)."""
