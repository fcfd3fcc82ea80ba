"""What the fork server of a one-host run imports before it forks the stage processes
(core.training.engine.forked_stages): the pipeline worker, with torch and
torch.distributed.pipelining, once for all stages. The server dies with torchrun, its parent
(then each stage, whose parent it is, ends by exit_with_parent). Only that server imports this.
"""

from core.system.process import die_with_parent

die_with_parent()  # first: torchrun may be killed while the worker imports

from core.training.engine import pipeline_worker  # noqa: E402, F401  (the stages' code, imported once)
