"""Training with a plan: data, engines, background jobs and run directories.

The public API for the CLI and the app is core.training.launcher (start,
stop, resume and list runs, read a status, tail metrics); it does not import
torch, the engines do.
"""
