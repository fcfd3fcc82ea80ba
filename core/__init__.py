"""Allot's core: everything that is not Qt (docs/architecture.md, "Module map").

    devices/   NVML gateway and its fake, catalog, host speed, inventory, telemetry
    model/     the built-in GPT, HF configs, model choice, meta-device measuring, the layer graph
    planning/  the one front door: model choice + devices + setup -> Problem -> Plan
    training/  runs (launcher, job, run directory, metrics) and engine/ (the torch side)
    runs/      run history, the read side: metrics as bounded, smoothed curves
    system/    what faces the OS: durable writes, the on-disk cache, process lifetime
    errors, units, project
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESOURCES_DIR = REPO_ROOT / "resources"
