"""Devices: the NVML gateway (the only NVML importer) and its fake, the GPU catalog,
host speed, device spec text, discovery (inventory), the telemetry sampler and its ring buffers."""
