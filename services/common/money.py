"""Exact money: Decimal only, parsed from and written as plain decimal strings.

Every computation runs in `EXACT`, a decimal context that raises on any rounding, so an
amount the service reports is provably the exact sum of the exact products it came from.
`usd` is the one builder of the wire's `Money`.

Money a client sends (a debate's budget, a budget cap) is read by one parser, `parse_amount`
(or `read_money` for a whole `Money` with its field path). It takes a plain decimal string
only, so that every amount stored can be summed exactly and written back as it was given:

- digits with at most one "." between digits: "2", "0.50", "1000000"; empty means zero
  (proto3's unset `Money.amount`);
- no exponent ("1e61", "1E+2"), no "_", no "+", no whitespace, no NaN or Infinity, no sign:
  a leading "-" is read only to say that a negative amount is refused;
- at most `MAX_FRACTION_DIGITS` (12) digits after the point, trailing zeros not counted
  (a trillionth of a dollar, finer than any price times any token count needs);
- at most `MAX_AMOUNT` (1,000,000,000 USD), and at most `MAX_AMOUNT_CHARS` characters.

Such an amount has at most 22 significant digits, so sums of it with a debate's costs stay far
inside `EXACT`'s 60 digits (a cap of "1e61" used to make every later budget sum of that debate
raise). The currency of a `Money` must be "USD" or empty (then USD).
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Iterable
from decimal import Decimal

from debate.common.v1 import common_pb2

from services.common.errors import Violations

CURRENCY = "USD"
ZERO = Decimal(0)
MILLION = Decimal(1_000_000)

# Bounds of an amount a client sends (see the module docstring).
MAX_AMOUNT = Decimal(1_000_000_000)
MAX_FRACTION_DIGITS = 12
MAX_AMOUNT_CHARS = 64
_PLAIN = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_NOT_FINITE = re.compile(r"[+-]?(?:nan|snan|inf|infinity)", re.IGNORECASE)
_FORM = 'must be a plain decimal such as "0.50" (digits and at most one ".")'

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


class AmountError(ValueError):
    """A money string refused by `parse_amount`; the message says why (a field violation's text)."""


def parse_amount(text: str) -> Decimal:
    """A plain decimal string ("1.40", "0", "" for zero) as Decimal, within the bounds of the
    module docstring; AmountError saying why otherwise."""
    if not text:
        return ZERO
    if len(text) > MAX_AMOUNT_CHARS:
        raise AmountError(f"must be at most {MAX_AMOUNT_CHARS} characters")
    if not _PLAIN.fullmatch(text):
        raise AmountError(f"{_FORM}, {_form_problem(text)}")
    if text.startswith("-"):
        raise AmountError("must not be negative")
    problem = amount_problem(Decimal(text))
    if problem:
        raise AmountError(problem)
    return Decimal(text)


def _form_problem(text: str) -> str:
    if _NOT_FINITE.fullmatch(text.strip()):
        return "not NaN or Infinity"
    if any(c.isspace() for c in text):
        return "without whitespace"
    if "_" in text:
        return "without underscores"
    if "e" in text.lower():
        return "without an exponent"
    if "+" in text:
        return 'without a "+" sign'
    return f"got {text[:20]!r}"


def amount_problem(amount: Decimal) -> str | None:
    """Why `amount` is outside the bounds of an amount a client may send; None when it is inside."""
    if not amount.is_finite():
        return "must be a finite number"
    if amount < 0:
        return "must not be negative"
    if amount > MAX_AMOUNT:
        return f"must be at most {format_amount(MAX_AMOUNT)}"
    if _fraction_digits(amount) > MAX_FRACTION_DIGITS:
        return f"must have at most {MAX_FRACTION_DIGITS} digits after the decimal point"
    return None


def _fraction_digits(amount: Decimal) -> int:
    """Digits after the point, trailing zeros not counted (no rounding: `normalize` would round
    at the context's precision)."""
    _, digits, exponent = amount.as_tuple()
    if not isinstance(exponent, int) or exponent >= 0:
        return 0
    written = "".join(map(str, digits))
    trailing_zeros = len(written) - len(written.rstrip("0"))
    return max(0, -exponent - trailing_zeros)


def read_money(money: common_pb2.Money, path: str, v: Violations, *, positive: bool = False) -> Decimal | None:
    """The amount of a `Money` a client sent, in USD; None with a violation at `path`.currency_code
    or `path`.amount for each problem (`positive`: zero is refused too)."""
    ok = True
    if money.currency_code not in ("", CURRENCY):
        v.add(f"{path}.currency_code", f'must be "{CURRENCY}" (or empty), got {money.currency_code[:20]!r}')
        ok = False
    try:
        amount = parse_amount(money.amount)
    except AmountError as error:
        v.add(f"{path}.amount", str(error))
        return None
    if positive and amount == 0:
        v.add(f"{path}.amount", 'must be greater than 0, e.g. "0.50"')
        return None
    return amount if ok else None


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
