"""Data parallelism for ``torchrun`` / ``accelerate launch``: one model copy per process.

The adapter splits the docs itself and tells lm-eval it is one process (rank 0 of 1). lm-eval
0.4.13's own split cannot be used: it gathers per-doc metrics on rank 0 only under the metric names
rank 0 has seen (lm_eval/evaluator.py ``evaluate``), so a metric that only some docs produce (e.g.
``control_false_positive_rate``, from identical-control docs) raises KeyError when a rank has none,
or is silently dropped when rank 0 has none. Instead every process builds all requests, computes
its share of the docs, and all processes exchange the traces; lm-eval then scores the same docs in
the same order as one process would, and writes results from ``LOCAL_RANK`` 0 only (its TP mode).
Both launchers set WORLD_SIZE, RANK and LOCAL_RANK; the process group uses NCCL when the processes
run on GPUs and gloo on CPU.

The docs still to compute are decided once for all processes (``agreed_pending``): each process
reads the shared result store at its own moment, and another process (or run) may commit a batch
in between, so the lists read can differ; split unagreed, some docs would be computed by nobody.
"""
from __future__ import annotations

import os
import sys

# The processes wait for each other in all_gather_object while the slowest finishes its share: a
# share can take hours, so the collective timeout must not be the 10 minutes NCCL defaults to.
COLLECTIVE_TIMEOUT_HOURS = 24


def _uses_gpus(device: str) -> bool:
    import torch

    return device.split(":")[0] in ("cuda", "auto") and torch.cuda.is_available()


class ProcessGroup:
    def __init__(self, device: str = "auto"):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = 0
        self.local_rank = 0
        if self.world_size > 1:
            import datetime

            import torch
            import torch.distributed as dist

            self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            gpus = _uses_gpus(device)
            if gpus:
                check_gpu_count(self.local_rank, torch.cuda.device_count())
                torch.cuda.set_device(self.local_rank)
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if gpus else "gloo",
                                        timeout=datetime.timedelta(hours=COLLECTIVE_TIMEOUT_HOURS))
            check_backend(dist.get_backend(), gpus, device)
            self.rank = dist.get_rank()
            sys.excepthook = exit_at_once(sys.excepthook)

    def device_for(self, device: str) -> str:
        """Each process gets its own GPU (lm-eval's CLI passes cuda:0 to every rank)."""
        if self.world_size > 1 and _uses_gpus(device):
            return f"cuda:{self.local_rank}"
        return device

    def all_gather_object(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.world_size <= 1:
            return [obj]
        import torch.distributed as dist

        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def agreed_pending(self, pending: list[int]) -> list[int]:
        """The docs every process treats as still to compute: those any process found missing from
        the store (sorted), the same list on every rank. A doc one process read as stored and
        another did not is computed again rather than by nobody."""
        if self.world_size <= 1:
            return list(pending)
        return sorted(set().union(*self.all_gather_object(list(pending))))

    def share(self, pending: list[int]) -> list[int]:
        """This process's docs of an agreed pending list."""
        return pending[self.rank :: self.world_size]


def exit_at_once(print_exception):
    """An excepthook for a process of a group: print the uncaught exception, then end the process
    at once. A normal exit runs the process group's destructors, which with NCCL can block on the
    collectives the other processes are waiting in; until this process is gone, the launcher
    (torchrun, accelerate) does not stop the others, which would wait for the collective timeout."""

    def hook(kind, value, traceback):
        print_exception(kind, value, traceback)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)

    return hook


def check_gpu_count(local_rank: int, gpus: int) -> None:
    """One GPU per process: a second process on a GPU would double its memory and race for it."""
    if local_rank >= gpus:
        raise ValueError(
            f"process LOCAL_RANK={local_rank} has no GPU of its own: this machine has {gpus} GPU(s); launch at "
            f"most {gpus} process(es) per machine (torchrun --nproc_per_node {gpus}) or use device=cpu"
        )


def check_backend(backend: str, gpus: bool, device: str) -> None:
    """NCCL exchanges CUDA tensors only: a CPU run in an NCCL group would fail at its first exchange."""
    if backend == "nccl" and not gpus:
        raise ValueError(
            f"device={device} runs on the CPU, but the process group uses NCCL, which needs GPUs; launch "
            "without an NCCL backend (torchrun picks gloo when the adapter initialises the group) or use a GPU device"
        )
