"""Train/eval split of a task's docs by doc id, saved so the evaluation never sees training docs.

The evaluation set is handed to lm-eval as ``--samples eval_samples.json``: a JSON mapping of the
task name to the indices of the held-out docs in the task's evaluation split (lm-eval's own
``doc_id``s), so ``lm_eval --model kvinject --tasks <task> --samples eval_samples.json`` runs exactly
the held-out docs. ``split.json`` keeps the doc ids of both sides (stable across rebuilds of the data).
"""
from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Sequence

SPLIT_FILE = "split.json"
EVAL_SAMPLES_FILE = "eval_samples.json"


@dataclasses.dataclass(frozen=True)
class DocSplit:
    task: str
    train_ids: tuple[str, ...]
    eval_ids: tuple[str, ...]
    eval_indices: tuple[int, ...]  # positions of the eval docs in the task's evaluation split

    def check_disjoint(self, example_doc_ids) -> None:
        """Raise if any example comes from a held-out doc (the guarantee the split exists for)."""
        leaked = sorted(set(example_doc_ids) & set(self.eval_ids))
        if leaked:
            raise ValueError(f"training examples from held-out docs of {self.task}: {', '.join(leaked[:5])}")


def split_by_doc_id(task: str, doc_ids: Sequence[str], eval_fraction: float, seed: int) -> DocSplit:
    """A seeded shuffle of the sorted unique ids: the first ``eval_fraction`` are held out.

    Sorting first makes the split depend only on the set of ids and the seed, not the docs' order.
    """
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction={eval_fraction}: must be strictly between 0 and 1")
    ids = [str(doc_id) for doc_id in doc_ids]
    duplicates = sorted({doc_id for doc_id in ids if ids.count(doc_id) > 1})
    if duplicates:
        raise ValueError(f"task {task}: duplicate doc ids {', '.join(duplicates[:5])}; a split by id needs unique ids")
    shuffled = sorted(ids)
    random.Random(seed).shuffle(shuffled)
    n_eval = max(1, round(eval_fraction * len(ids)))
    if n_eval >= len(ids):
        raise ValueError(f"task {task}: {len(ids)} docs are too few to hold out {eval_fraction:.0%} and train on the rest")
    held_out = set(shuffled[:n_eval])
    position = {doc_id: index for index, doc_id in enumerate(ids)}
    eval_ids = tuple(sorted(held_out, key=position.get))
    return DocSplit(
        task=task,
        train_ids=tuple(doc_id for doc_id in ids if doc_id not in held_out),
        eval_ids=eval_ids,
        eval_indices=tuple(position[doc_id] for doc_id in eval_ids),
    )


def save_split(split: DocSplit, folder: Path, eval_samples_limit: int | None = None) -> None:
    """``split.json`` (both sides) and ``eval_samples.json`` for lm-eval's ``--samples`` (the first
    ``eval_samples_limit`` held-out docs when given: ``--samples`` cannot be combined with ``--limit``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SPLIT_FILE).write_text(json.dumps(dataclasses.asdict(split), indent=1) + "\n")
    indices = list(split.eval_indices)[:eval_samples_limit]
    (folder / EVAL_SAMPLES_FILE).write_text(json.dumps({split.task: indices}) + "\n")


def load_split(folder: Path) -> DocSplit:
    """The DocSplit that save_split wrote to ``folder``/split.json."""
    raw = json.loads((folder / SPLIT_FILE).read_text())
    return DocSplit(raw["task"], tuple(raw["train_ids"]), tuple(raw["eval_ids"]), tuple(raw["eval_indices"]))
