"""Data parallelism for ``torchrun`` / ``accelerate launch``: one model copy per process.

lm-eval splits the docs by ``rank`` and ``world_size``, pads the ranks to equal length with copies
of their last request, and gathers per-doc results on rank 0 with the model's ``all_gather``,
``gather_object`` and ``barrier`` (lm_eval/evaluator.py). Both launchers set WORLD_SIZE, RANK and
LOCAL_RANK; the process group uses NCCL on GPUs and gloo on CPU.
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

    def all_gather(self, tensor):
        """The tensors of every rank, concatenated along a leading dimension (rank order)."""
        if self.world_size <= 1:
            return tensor
        import torch
        import torch.distributed as dist

        flat = tensor.reshape(-1)
        parts = [torch.zeros_like(flat) for _ in range(self.world_size)]
        dist.all_gather(parts, flat)
        return torch.cat(parts)

    def gather_object(self, obj, dst: int = 0):
        if self.world_size <= 1:
            return [obj]
        import torch.distributed as dist

        gathered = [None] * self.world_size if self.rank == dst else None
        dist.gather_object(obj, gathered, dst=dst)
        return gathered

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()
