"""Devices: the NVML gateway (the only NVML importer) and its fake, the GPU catalog, host
speed, device spec text split into requests (device_requests), discovery (inventory), the
telemetry sampler and its ring buffers."""
