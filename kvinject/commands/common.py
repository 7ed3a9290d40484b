"""What several ``kvinject`` commands share: flag parsers and checks whose errors exit 2 with one line."""
from __future__ import annotations

from pathlib import Path

from kvinject.commands import UsageError
from kvinject.model_adapters.injection_settings import split_injection_points


def injection_points(text: str, flag: str = "--injection_points") -> list[int]:
    """``5,10,15`` (or 5:10:15) -> [5, 10, 15]; UsageError names the flag."""
    try:
        points = [int(part) for part in split_injection_points(text)]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected integers such as 5,10,15") from None
    if not points:
        raise UsageError(f"{flag}: give at least one point")
    return points


def extra_model_args(text: str) -> dict:
    """``--model_args k=v,k=v`` of the commands (validated later by parse_model_args)."""
    extra = {}
    for item in filter(None, text.split(",")):
        name, equals, value = item.partition("=")
        if not equals:
            raise UsageError(f"--model_args {item!r}: expected name=value")
        extra[name.strip()] = value.strip()
    return extra


def existing_folder(path: str | Path, flag: str) -> Path:
    """``path`` when it is a folder; UsageError naming the flag otherwise."""
    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"{flag} {str(path)!r}: no such folder")
    return folder


def in_range(value: float, flag: str, low: float, high: float, *, open_low: bool = False, open_high: bool = False):
    """``value`` when low <= value <= high (strict where open_*); UsageError naming the flag otherwise."""
    above = value > low if open_low else value >= low
    below = value < high if open_high else value <= high
    if not (above and below):
        left, right = "(" if open_low else "[", ")" if open_high else "]"
        raise UsageError(f"{flag} {value}: must lie in {left}{low}, {high}{right}")
    return value


def model_folder_exists(pretrained: str, flag: str) -> None:
    """UsageError when ``pretrained`` names a local model folder that does not exist."""
    from kvinject.model_adapters.loading import missing_model_folder

    if missing_model_folder(pretrained):
        raise UsageError(f"{flag}: pretrained={pretrained}: no such model folder")
