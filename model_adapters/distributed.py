"""Data parallelism for ``torchrun`` / ``accelerate launch``: one model copy per process.

The adapter splits the docs itself and tells lm-eval it is one process (rank 0 of 1). lm-eval
0.4.13's own split cannot be used: it gathers per-doc metrics on rank 0 only under the metric names
rank 0 has seen (lm_eval/evaluator.py ``evaluate``), so a metric that only some docs produce (e.g.
``control_false_positive_rate``, from identical-control docs) raises KeyError when a rank has none,
or is silently dropped when rank 0 has none. Instead every process builds all requests, computes
its share of the docs, and all processes exchange the traces; lm-eval then scores the same docs in
the same order as one process would, and writes results from ``LOCAL_RANK`` 0 only (its TP mode).
Both launchers set WORLD_SIZE, RANK and LOCAL_RANK; the process group uses NCCL on GPUs and gloo on CPU.
"""
from __future__ import annotations

import os


class ProcessGroup:
    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = 0
        self.local_rank = 0
        if self.world_size > 1:
            import torch
            import torch.distributed as dist

            self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            if torch.cuda.is_available():
                torch.cuda.set_device(self.local_rank)
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
            self.rank = dist.get_rank()

    def device_for(self, device: str) -> str:
        """Each process gets its own GPU (lm-eval's CLI passes cuda:0 to every rank)."""
        if self.world_size > 1 and device.split(":")[0] in ("cuda", "auto"):
            import torch

            if torch.cuda.is_available():
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
