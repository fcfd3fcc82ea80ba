"""The torch side of training: the loop, the local and pipeline engines, stages,
optimizers, checkpoints, profiling and run state. Everything here imports torch."""
