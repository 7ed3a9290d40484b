"""Exact arithmetic over MAWPS equations: parse, evaluate with Fraction, render as infix text.

Leaves are either a `Slot` (the i-th quantity written in the problem text, so changing the text's number
changes the equation) or a `Const` (a number the equation uses that the text does not state, e.g. 100 for
a percentage). Every answer the builder stores comes from `evaluate`, never from the source's own answer.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Mapping, Union

OPERATIONS: dict[str, Callable[[Fraction, Fraction], Fraction]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


@dataclass(frozen=True)
class Slot:
    index: int


@dataclass(frozen=True)
class Const:
    value: Fraction


@dataclass(frozen=True)
class BinOp:
    op: str
    left: "Expr"
    right: "Expr"


Expr = Union[Slot, Const, BinOp]


class ExpressionError(ValueError):
    """An equation that cannot be parsed or evaluated exactly."""


def format_number(value: Fraction) -> str:
    """Integers without a trailing '.0', terminating decimals as decimals, anything else as a/b."""
    if value.denominator == 1:
        return str(value.numerator)
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator == 1:
        return f"{float(value):.10f}".rstrip("0").rstrip(".")
    return f"{value.numerator}/{value.denominator}"


def evaluate(expr: Expr, values: Mapping[int, Fraction]) -> Fraction:
    """The exact value of ``expr`` with ``values`` in its slots; ExpressionError on a division by zero."""
    if isinstance(expr, Slot):
        return values[expr.index]
    if isinstance(expr, Const):
        return expr.value
    try:
        return OPERATIONS[expr.op](evaluate(expr.left, values), evaluate(expr.right, values))
    except ZeroDivisionError as error:
        raise ExpressionError("division by zero") from error


def operation_values(expr: Expr, values: Mapping[int, Fraction]) -> list[Fraction]:
    """The value of every operator node, the final result last (empty for a bare number)."""
    if not isinstance(expr, BinOp):
        return []
    return operation_values(expr.left, values) + operation_values(expr.right, values) + [evaluate(expr, values)]


def used_slots(expr: Expr) -> tuple[int, ...]:
    """The sorted indices of the slots the expression reads, each once."""
    if isinstance(expr, Slot):
        return (expr.index,)
    if isinstance(expr, Const):
        return ()
    return tuple(sorted(set(used_slots(expr.left)) | set(used_slots(expr.right))))


def constants(expr: Expr) -> tuple[Fraction, ...]:
    """The numbers the equation uses that the text does not state (e.g. 100 for a percentage)."""
    if isinstance(expr, Const):
        return (expr.value,)
    if isinstance(expr, Slot):
        return ()
    return constants(expr.left) + constants(expr.right)


def operators(expr: Expr) -> set[str]:
    """The operators (``+ - * /``) the expression uses; empty for a bare number."""
    if not isinstance(expr, BinOp):
        return set()
    return {expr.op} | operators(expr.left) | operators(expr.right)


def render(expr: Expr, values: Mapping[int, Fraction]) -> str:
    """Infix text with only the parentheses the precedence rules need."""
    if isinstance(expr, Slot):
        return format_number(values[expr.index])
    if isinstance(expr, Const):
        return format_number(expr.value)
    precedence = _PRECEDENCE[expr.op]
    left = render(expr.left, values)
    right = render(expr.right, values)
    if isinstance(expr.left, BinOp) and _PRECEDENCE[expr.left.op] < precedence:
        left = f"({left})"
    # a - (b + c) and a / (b * c) need parentheses even at equal precedence
    if isinstance(expr.right, BinOp) and (
        _PRECEDENCE[expr.right.op] < precedence
        or (_PRECEDENCE[expr.right.op] == precedence and expr.op in "-/")
    ):
        right = f"({right})"
    return f"{left} {expr.op} {right}"


def parse_prefix(text: str) -> Expr:
    """SVAMP's prefix notation over `numberN` placeholders and literal constants: `- number0 * number1 2`."""
    tokens = text.split()

    def parse(position: int) -> tuple[Expr, int]:
        if position >= len(tokens):
            raise ExpressionError(f"prefix equation {text!r} ends early")
        token = tokens[position]
        if token in OPERATIONS:
            left, position = parse(position + 1)
            right, position = parse(position)
            return BinOp(token, left, right), position
        placeholder = re.fullmatch(r"number(\d+)", token)
        if placeholder:
            return Slot(int(placeholder.group(1))), position + 1
        return Const(_literal(token, text)), position + 1

    expr, end = parse(0)
    if end != len(tokens):
        raise ExpressionError(f"prefix equation {text!r} has trailing tokens")
    return expr


_INFIX_TOKEN = re.compile(r"\s*(\d+\.?\d*|\.\d+|[-+*/()])")


def parse_infix(text: str, leaf: Callable[[Fraction], Expr]) -> Expr:
    """Infix arithmetic over literal numbers; `leaf` turns each literal into a Slot or a Const."""
    tokens: list[str] = []
    position = 0
    while position < len(text.rstrip()):
        match = _INFIX_TOKEN.match(text, position)
        if not match:
            raise ExpressionError(f"unexpected character in equation {text!r} at {position}")
        tokens.append(match.group(1))
        position = match.end()
    cursor = 0

    def peek() -> str | None:
        return tokens[cursor] if cursor < len(tokens) else None

    def take() -> str:
        nonlocal cursor
        if cursor >= len(tokens):
            raise ExpressionError(f"equation {text!r} ends early")
        cursor += 1
        return tokens[cursor - 1]

    def parse_sum() -> Expr:
        expr = parse_product()
        while peek() in ("+", "-"):
            op = take()
            expr = BinOp(op, expr, parse_product())
        return expr

    def parse_product() -> Expr:
        expr = parse_atom()
        while peek() in ("*", "/"):
            op = take()
            expr = BinOp(op, expr, parse_atom())
        return expr

    def parse_atom() -> Expr:
        token = take()
        if token == "(":
            expr = parse_sum()
            if take() != ")":
                raise ExpressionError(f"unbalanced parentheses in {text!r}")
            return expr
        if token in OPERATIONS or token == ")":
            raise ExpressionError(f"unexpected {token!r} in equation {text!r}")
        return leaf(_literal(token, text))

    expr = parse_sum()
    if cursor != len(tokens):
        raise ExpressionError(f"equation {text!r} has trailing tokens")
    return expr


def _literal(token: str, context: str) -> Fraction:
    try:
        return Fraction(token)
    except ValueError as error:
        raise ExpressionError(f"not a number: {token!r} in {context!r}") from error
