"""Training with a plan: data, engines, background jobs and run directories.

The public API for the CLI and the app is core.training.launcher (start,
stop, resume and list runs, read a status, tail metrics; the run config,
checkpoints, profiles and the HF export re-exported) and, to show a run,
core.training.run_info (RunInfo, and its RunReport of predicted vs measured
per stage); none imports torch, the engines do. tests/test_core_api.py
holds gui/ and cli/ to them. A run's history read back as curves is
core.runs'.
"""
