"""Currencies (ISO 4217) and their minor units. Money is ``Decimal`` with a currency; never a float."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, ValidationInfo, WithJsonSchema
from pydantic_core import PydanticCustomError

# ISO 4217 active codes -> number of minor-unit digits (the exceptions to 2 are listed explicitly).
_ZERO = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE = "BHD IQD JOD KWD LYD OMR TND"
_FOUR = "CLF UYW"
_TWO = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD CAD "
    "CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD "
    "GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA "
    "MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR "
    "RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD "
    "TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG"
)

MINOR_UNITS: dict[str, int] = {
    **{c: 2 for c in _TWO.split()},
    **{c: 0 for c in _ZERO.split()},
    **{c: 3 for c in _THREE.split()},
    **{c: 4 for c in _FOUR.split()},
}


def is_currency(code: str) -> bool:
    return code in MINOR_UNITS


def normalise_currency(value: Any) -> Any:
    """Currency codes are case-insensitive on the way in ("eur" is EUR); stored and answered in capitals."""
    return value.upper() if isinstance(value, str) and value.isascii() else value


def fits_currency(amount: Decimal, currency: str) -> bool:
    """True when ``amount`` has no more decimals than ``currency`` allows (and is finite)."""
    if not amount.is_finite():
        return False
    exponent = amount.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return -exponent <= MINOR_UNITS[currency]


# Decimals on the wire: a JSON string of ASCII digits, an optional minus sign and an optional fraction
# ("30.00", "0.5", "-2"). A JSON number is refused, because most JSON parsers (JavaScript's among them) read
# it as a binary float and 0.1 + 0.2 is not 0.3 there; so are padding ("  30.00 "), exponents ("3e1") and
# non-ASCII digits ("٣٠"), which Python's Decimal() would otherwise quietly accept.
DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?", re.ASCII)


def decimal_from_text(value: Any, info: ValidationInfo) -> Any:
    """Before-validator of ``DecimalText``. From JSON only a decimal string is taken; from Python code a
    Decimal or an int (exact) also passes. A float never does (0.1 is not 1/10 in binary)."""
    if isinstance(value, Decimal) or (info.mode == "python" and isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, int | float):  # bool is an int
        raise PydanticCustomError("decimal_string", 'Must be a decimal string such as "30.00", not a JSON number')
    if not isinstance(value, str):
        raise PydanticCustomError("decimal_string", 'Must be a decimal string such as "30.00"')
    if not _DECIMAL_TEXT.fullmatch(value):
        raise PydanticCustomError("decimal_string", 'Must be a decimal string of ASCII digits such as "30.00" '
                                  '(no spaces, no "+", no exponent)')
    return Decimal(value)


DecimalText = Annotated[
    Decimal,
    BeforeValidator(decimal_from_text),
    PlainSerializer(lambda d: str(d), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": DECIMAL_PATTERN, "examples": ["30.00"]}),
]
"""Every decimal of the API (money, factors, thresholds, shares): in and out, a string of ASCII digits."""

CurrencyCode = Annotated[
    str, BeforeValidator(normalise_currency),
    WithJsonSchema({"type": "string", "minLength": 3, "maxLength": 3, "examples": ["EUR"],
                    "description": "ISO 4217 code, case-insensitive (answered in capitals)"}),
]
