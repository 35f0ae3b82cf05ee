"""Process-group helpers: torchrun's environment (one or many nodes), or processes spawned here.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `init_from_env` reads them, picks
NCCL on GPUs and gloo on CPU, and binds each process to its local GPU. Multi-node runs only need torchrun
started on every node with the same rendezvous (`--nnodes N --node-rank i --master-addr host`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    if is_dist() and get_world_size() > 1:
        dist.barrier()


def default_backend(device: str | torch.device | None = None) -> str:
    dev = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return "nccl" if dev.startswith("cuda") and dist.is_nccl_available() else "gloo"


def init_from_env(backend: str = "", device: str | None = None, timeout_s: int = 1800) -> bool:
    """Join the process group described by the environment; False when running as a single process."""
    if is_dist():
        return True
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    backend = backend or default_backend(device)
    if backend == "nccl":
        torch.cuda.set_device(get_local_rank())
    dist.init_process_group(backend=backend, init_method="env://", timeout=timedelta(seconds=timeout_s))
    return True


def destroy() -> None:
    if is_dist():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over processes (a copy; on the process group's device, returned on the tensor's device)."""
    if not is_dist() or get_world_size() == 1:
        return t
    dev = t.device
    work = t.clone()
    if dist.get_backend() == "nccl":
        work = work.cuda()
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(dev)


def reduce_mean_dict(values: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over processes (for logging: every rank calls it with the same keys)."""
    if not is_dist() or get_world_size() == 1 or not values:
        return values
    names = sorted(values)
    t = torch.tensor([float(values[k]) for k in names], dtype=torch.float64)
    t = all_reduce_sum(t) / get_world_size()
    return dict(zip(names, t.tolist()))


def broadcast_object(obj, src: int = 0):
    if not is_dist() or get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned(local_rank: int, fn: Callable, world_size: int, port: int, backend: str, args: tuple) -> None:
    os.environ.update({
        "RANK": str(local_rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(world_size),
        "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
    })
    init_from_env(backend)
    try:
        fn(*args)
    finally:
        destroy()


def launch(fn: Callable, num_processes: int, args: tuple = (), backend: str = "") -> None:
    """Run fn(*args) in `num_processes` local processes joined in one group (detectron2's `launch`).

    For several nodes use torchrun (train_net.py is its entry point); this covers one machine.
    """
    if num_processes <= 1:
        fn(*args)
        return
    import torch.multiprocessing as mp

    mp.start_processes(_spawned, args=(fn, num_processes, free_port(), backend, args), nprocs=num_processes,
                       join=True, start_method="spawn")
