"""The Training tab: start/stop/resume, loss plots, stages, run history."""
