"""Pure helpers: key format, currencies, embedded-Postgres PID pruning."""

from __future__ import annotations

import json
import os
from decimal import Decimal

from app.db.embedded import _prune_dead_pids
from app.money import fits_currency, is_currency
from app.programs.keys import generate_key, hash_key, matches, parse_prefix


def test_generated_keys_parse_and_match():
    key, prefix, digest = generate_key()
    assert parse_prefix(key) == prefix
    assert matches(key, digest) and digest == hash_key(key)
    assert not matches(key + "x", digest)
    assert parse_prefix("plk_short_x") is None and parse_prefix("other") is None


def test_currencies_and_minor_units():
    assert is_currency("EUR") and is_currency("JPY") and not is_currency("EURO")
    assert fits_currency(Decimal("12.30"), "EUR") and not fits_currency(Decimal("12.305"), "EUR")
    assert fits_currency(Decimal("1200"), "JPY") and not fits_currency(Decimal("1.5"), "JPY")
    assert fits_currency(Decimal("1.234"), "KWD") and not fits_currency(Decimal("NaN"), "EUR")


def test_dead_pids_are_pruned(tmp_path):
    pid_file = tmp_path / ".handle_pids.json"
    pid_file.write_text(json.dumps([os.getpid(), 2**22 + 12345]))
    _prune_dead_pids(tmp_path)
    assert json.loads(pid_file.read_text()) == [os.getpid()]
