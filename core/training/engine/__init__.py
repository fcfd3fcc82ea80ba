"""The torch side of training: the loop, the local engine, the pipeline engine (pipeline_launch
starts torchrun, pipeline_worker is each stage process), stages, optimizers, checkpoints,
profiling and run state. Everything here imports torch."""
