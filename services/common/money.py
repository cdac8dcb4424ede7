"""Exact money: Decimal only, parsed from and written as plain decimal strings.

Every computation runs in `EXACT`, a decimal context that raises on any rounding, so an
amount the service reports is provably the exact sum of the exact products it came from.
`usd` is the one builder of the wire's `Money`.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable
from decimal import Decimal

from debate.common.v1 import common_pb2

CURRENCY = "USD"
ZERO = Decimal(0)
MILLION = Decimal(1_000_000)

# 60 significant digits hold any realistic product of a token count and a per-token price;
# should one ever need more, Inexact raises instead of rounding silently.
EXACT = decimal.Context(
    prec=60,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow, decimal.Inexact, decimal.Rounded],
)


def to_decimal(value: float | str) -> Decimal:
    """A float from a JSON price map via its shortest repr (3e-06 -> 0.000003), never its
    binary value; an int or a string as written."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a price")
    if isinstance(value, float):
        value = repr(value)
    return Decimal(value)


def parse_amount(text: str) -> Decimal | None:
    """A finite decimal string ("1.40", "0", "") as Decimal; None when it is not one."""
    text = text.strip()
    if not text:
        return ZERO
    try:
        amount = Decimal(text)
    except decimal.InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def format_amount(amount: Decimal) -> str:
    """Plain notation with no exponent and no trailing zeros: 18, 1.4, 0.0000035."""
    if amount == 0:
        return "0"
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def exact_sum(amounts: Iterable[Decimal]) -> Decimal:
    total = ZERO
    for amount in amounts:
        total = EXACT.add(total, amount)
    return total


def mul(a: Decimal | int, b: Decimal | int) -> Decimal:
    return EXACT.multiply(Decimal(a), Decimal(b))


def usd(amount: Decimal | int) -> common_pb2.Money:
    """An amount in USD as the wire's Money: a plain decimal string, no exponent and no
    trailing zeros (Decimal("0.00020") -> "0.0002", Decimal("1E-7") -> "0.0000001")."""
    return common_pb2.Money(currency_code=CURRENCY, amount=format_amount(Decimal(amount)))
