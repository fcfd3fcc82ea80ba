"""Training with a plan: data, engines, background jobs and run directories.

The public API for the CLI and the app is core.training.launcher (start,
stop, resume and list runs, read a status, tail metrics) and, to show a run,
core.training.run_info (RunInfo, and its RunReport of predicted vs measured
per stage); none imports torch, the engines do.
"""
