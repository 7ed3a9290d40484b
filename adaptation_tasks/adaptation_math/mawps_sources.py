"""Read an upstream MAWPS copy into `SourceProblem`s, whichever of the three accepted formats it is.

Formats (chosen by what the path is, or a Hub id when it is not a path):
- a folder of SVAMP `cv_mawps` CSVs (masked `numberN` text + prefix equation),
- MWPToolkit's `MAWPS.json` or `mawps_source.json` (literal numbers + infix equation),
- the Hub's `MU-NLPC/Calc-mawps`, or a local parquet/jsonl folder with its columns, both read with
  `datasets.load_dataset` (literal numbers + infix `expression`).
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

from kvinject.adaptation_tasks.adaptation_math.expression import (
    Const,
    Expr,
    ExpressionError,
    Slot,
    parse_infix,
    parse_prefix,
)

SOURCE_ENV_VAR = "KVINJECT_MAWPS_SOURCE"
DEFAULT_SOURCE = "MU-NLPC/Calc-mawps"
ACCEPTED_SOURCES = (
    f"Set {SOURCE_ENV_VAR} to one of: a SVAMP `cv_mawps` folder of CSVs (fold*/dev.csv); MWPToolkit's "
    "`MAWPS.json` or `mawps_source.json`; a folder of parquet/jsonl files in the Calc-mawps column layout "
    f"(id, question, chain, result, result_float, equation, expression); or a Hugging Face Hub id such as "
    f"{DEFAULT_SOURCE} (the default; needs a connection)."
)


class MawpsSourceError(RuntimeError):
    """The MAWPS source is missing, unreadable or in no accepted format."""


@dataclass(frozen=True)
class SourceProblem:
    source_id: str
    segments: tuple[str | int, ...]  # literal text and slot indices (int) in reading order
    numbers: dict[int, Fraction]  # slot index -> value as written in the source
    equation: Expr
    stated_answer: Fraction


@dataclass(frozen=True)
class MawpsSource:
    name: str
    problems: list[SourceProblem]
    checksum: str  # sha256 of the raw rows as read, the cache key of the built set
    unusable_rows: int  # rows whose equation could not be parsed


def read_mawps_source(source: str) -> MawpsSource:
    """The problems of ``source`` in whichever accepted format it is (module docstring); MawpsSourceError when it
    is missing, unreadable or in no accepted format."""
    path = Path(source).expanduser()
    try:
        if path.is_dir() and sorted(path.glob("**/*.csv")):
            rows = _read_csv_rows(path)
            return _convert(source, rows, _svamp_problem)
        if path.is_file() and path.suffix == ".json":
            rows = json.loads(path.read_text(encoding="utf-8"))
            return _convert(source, rows, _mwptoolkit_problem)
        if path.exists() or _looks_like_hub_id(source):
            return _convert(source, _read_with_datasets(source), _calc_mawps_problem)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise MawpsSourceError(f"Cannot read the MAWPS source {source!r}: {error}. {ACCEPTED_SOURCES}") from error
    raise MawpsSourceError(f"The MAWPS source {source!r} does not exist. {ACCEPTED_SOURCES}")


def _looks_like_hub_id(source: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", source) is not None


def _read_csv_rows(folder: Path) -> list[dict]:
    rows = []
    for csv_path in sorted(folder.glob("**/*.csv")):
        relative = csv_path.relative_to(folder).as_posix()
        with csv_path.open(newline="", encoding="utf-8") as handle:
            for line_number, row in enumerate(csv.DictReader(handle), start=2):
                rows.append({"_id": f"{relative}:{line_number}", **row})
    return rows


def _read_with_datasets(source: str) -> list[dict]:
    import datasets  # heavy; only this format needs it

    try:
        splits = datasets.load_dataset(source)
    except Exception as error:  # offline Hub lookups raise several unrelated types
        raise MawpsSourceError(
            f"datasets.load_dataset({source!r}) failed ({type(error).__name__}: {error}). {ACCEPTED_SOURCES}"
        ) from error
    rows = [dict(row) for split in sorted(splits) for row in splits[split]]
    # the Hub set repeats a problem across its splits/configs; keep one copy per id
    return list({str(row["id"]): row for row in rows}.values())


def _convert(name: str, rows: list[dict], to_problem: Callable[[dict], SourceProblem]) -> MawpsSource:
    if not isinstance(rows, list) or not rows:
        raise MawpsSourceError(f"The MAWPS source {name!r} holds no problems. {ACCEPTED_SOURCES}")
    problems, unusable = [], 0
    for row in rows:
        try:
            problems.append(to_problem(row))
        except (ExpressionError, ValueError, ZeroDivisionError):
            unusable += 1
    checksum = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
    return MawpsSource(name, problems, checksum, unusable)


def _svamp_problem(row: dict) -> SourceProblem:
    pieces = re.split(r"number(\d+)", row["Question"])
    segments = tuple(piece if i % 2 == 0 else int(piece) for i, piece in enumerate(pieces))
    numbers = {i: Fraction(value) for i, value in enumerate(row["Numbers"].split())}
    return SourceProblem(row["_id"], segments, numbers, parse_prefix(row["Equation"]), Fraction(row["Answer"]))


def _mwptoolkit_problem(row: dict) -> SourceProblem:
    if "sQuestion" in row:  # mawps_source.json: the original MAWPS format
        equations, solutions = row["lEquations"], row["lSolutions"]
        if len(equations) != 1 or len(solutions) != 1:
            raise ValueError("only single-equation problems are used")
        return _literal_problem(str(row["iIndex"]), row["sQuestion"], equations[0], solutions[0])
    return _literal_problem(str(row["id"]), row["original_text"], row["equation"], row["ans"])


def _calc_mawps_problem(row: dict) -> SourceProblem:
    return _literal_problem(str(row["id"]), row["question"], row["expression"], row["result"])


# A number as written in a problem: 56, 1,500, 2.5; not part of a word like "3rd".
_NUMBER_IN_TEXT = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w]|\.\d)")


def numbers_in_text(text: str) -> list[Fraction]:
    """The numbers written in a text, in reading order (what a reader of the problem sees)."""
    return [Fraction(match.group(0).replace(",", "")) for match in _NUMBER_IN_TEXT.finditer(text)]


def _literal_problem(source_id: str, text: str, equation: str, answer: object) -> SourceProblem:
    segments: list[str | int] = []
    numbers: dict[int, Fraction] = {}
    position = 0
    for match in _NUMBER_IN_TEXT.finditer(text):
        segments.append(text[position : match.start()])
        slot = len(numbers)
        numbers[slot] = Fraction(match.group(0).replace(",", ""))
        segments.append(slot)
        position = match.end()
    segments.append(text[position:])
    occurrences = Counter(numbers.values())
    slot_of_value = {value: slot for slot, value in numbers.items()}

    def leaf(value: Fraction) -> Expr:
        # A value written once in the text is that quantity; a value written twice is ambiguous and one
        # the text never states is a constant (e.g. 100 for percent): both stay fixed in every variant.
        return Slot(slot_of_value[value]) if occurrences[value] == 1 else Const(value)

    return SourceProblem(source_id, tuple(segments), numbers, parse_infix(_solved_side(equation), leaf), Fraction(str(answer)))


def _solved_side(equation: str) -> str:
    """`x=56*9`, `56*9=x`, `X = (27.0*16.0)` -> the side without the unknown; `X-9=4` is refused."""
    sides = equation.split("=")
    if len(sides) == 1:
        return equation
    if len(sides) == 2:
        for unknown, expression in (sides, sides[::-1]):
            if re.fullmatch(r"\s*[A-Za-z_]\w*\s*", unknown) and not re.search(r"[A-Za-z_]", expression):
                return expression
    raise ExpressionError(f"equation {equation!r} is not solved for its unknown")
