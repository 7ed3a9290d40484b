"""Timing, memory and machine details for the side-by-side benchmarks.

Two things compared on a busy machine are timed in one process, back to back: each repetition runs
every contender once (the order alternates between repetitions so neither always runs on a warm
cache), and a ratio is the median of the per-repetition ratios, which cancels slow phases that hit
both contenders of a repetition alike.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from typing import Callable

import torch


@dataclasses.dataclass
class Row:
    """One line of the ratio table: ``numerator / denominator`` of median seconds (or of a rate)."""

    name: str
    numerator: str
    denominator: str
    ratio: float
    target: str = ""  # e.g. "<= 0.30"; empty when the issue sets none
    detail: str = ""  # absolute medians, memory, sizes

    @property
    def verdict(self) -> str:
        """"met" / "missed" against the target, "" without one."""
        if not self.target:
            return ""
        op, value = self.target.split()
        met = self.ratio <= float(value) if op == "<=" else self.ratio >= float(value)
        return "met" if met else "missed"


def interleaved_seconds(contenders: dict[str, Callable[[], object]], repeats: int,
                        warmup: int = 1) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Seconds of every repetition of every contender, run alternately in one process, and what
    each contender returned last (so a caller can check they computed the same thing)."""
    names = list(contenders)
    outputs = {}
    for _ in range(warmup):
        for name in names:
            outputs[name] = contenders[name]()
    seconds = {name: [] for name in names}
    for repetition in range(repeats):
        for name in names if repetition % 2 == 0 else reversed(names):
            sync()
            start = time.perf_counter()
            outputs[name] = contenders[name]()
            sync()
            seconds[name].append(time.perf_counter() - start)
    return seconds, outputs


def paired_ratio(seconds: dict[str, list[float]], numerator: str, denominator: str) -> float:
    return statistics.median(a / b for a, b in zip(seconds[numerator], seconds[denominator]))


def median(values: list[float]) -> float:
    return statistics.median(values)


def sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------ memory

def peak_memory_mib(function: Callable[[], object], device: str) -> float:
    """Peak memory while ``function`` runs, in MiB, model weights included: CUDA allocated bytes on
    a GPU; on CPU the process's peak resident set (VmHWM, reset through /proc/self/clear_refs first),
    which also counts memory the allocator kept from earlier work."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        function()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    with open("/proc/self/clear_refs", "w") as handle:  # "5" resets the peak RSS to the current RSS
        handle.write("5")
    function()
    return _proc_status_kib("VmHWM") / 1024


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


# ------------------------------------------------------------------------------------------ report

def machine_details() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    parts = [f"cpu: {cpu}", f"cores: {os.cpu_count()}", f"torch threads: {torch.get_num_threads()}",
             f"torch {torch.__version__}", f"python {platform.python_version()}"]
    if torch.cuda.is_available():
        parts.insert(0, f"gpu: {torch.cuda.get_device_name()}")
    try:
        parts.append("load average: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    except OSError:
        pass
    return ", ".join(parts)


def format_table(rows: list[Row], title: str) -> str:
    header = ("comparison", "ratio", "target", "", "numerator / denominator", "detail")
    lines = [[r.name, f"{r.ratio:.3f}", r.target, r.verdict, f"{r.numerator} / {r.denominator}", r.detail]
             for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    render = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([title, machine_details(), render(header), render(["-" * w for w in widths])]
                     + [render(line) for line in lines])
