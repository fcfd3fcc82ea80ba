"""torchrun bound to loopback: `python -m core.training.engine.loopback_run TORCHRUN_ARGS`.

torch's TCPStore server listens on every interface ("::") whatever host it is
given, so a one-machine torchrun opens its rendezvous store and its agent
store, unauthenticated, to the network. TCPStore takes an already listening
socket (`master_listen_fd`): this wrapper hands every store server that the
agent creates a socket bound to 127.0.0.1, then runs torchrun unchanged. With
`--local-addr 127.0.0.1` the agent tells its workers to connect there, and
GLOO_SOCKET_IFNAME=lo (set by core.training.engine.pipeline_launch) keeps gloo's own
sockets on loopback too. Multi-node runs use plain torchrun: they must listen
where the other hosts can reach them. The stage processes are forks of one
server that imported the worker once (core.training.engine.forked_stages).
"""

from __future__ import annotations

import socket
import sys
from typing import Any

LOOPBACK = "127.0.0.1"
_listeners: list[socket.socket] = []  # kept open: the store serves on them until the process ends


def loopback_store(original: Any) -> Any:
    """A TCPStore factory whose servers listen on 127.0.0.1 only."""

    def create(host_name: str, port: int, *args: Any, **kwargs: Any) -> Any:
        is_master = kwargs.get("is_master", args[1] if len(args) > 1 else False)
        if is_master and kwargs.get("master_listen_fd") is None:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((LOOPBACK, port))
            listener.listen(128)
            _listeners.append(listener)
            kwargs["master_listen_fd"] = listener.fileno()
            port = listener.getsockname()[1]
        return original(host_name, port, *args, **kwargs)

    return create


def install() -> None:
    """Replace TCPStore where torch's elastic agent and rendezvous look it up."""
    import torch.distributed as dist
    from torch.distributed.elastic.rendezvous import c10d_rendezvous_backend, static_tcp_rendezvous

    factory = loopback_store(dist.TCPStore)
    dist.TCPStore = factory  # type: ignore[misc]
    c10d_rendezvous_backend.TCPStore = factory  # type: ignore[misc]
    static_tcp_rendezvous.TCPStore = factory  # type: ignore[misc]


def main() -> None:
    from core.training.engine.forked_stages import forks_stages, start_server, torchrun_forked

    if forks_stages(sys.argv[1:]):
        start_server(sys.argv[1:])  # it imports the worker while this process imports torch
    install()
    torchrun_forked(sys.argv[1:])  # torchrun, its stage processes forked from that server


if __name__ == "__main__":
    main()
