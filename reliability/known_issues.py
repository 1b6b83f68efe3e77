"""Service bugs the reliability commands found, reported and not fixed yet (``app/`` is not this suite's to
change). Each has a reproduction, and the anomaly signatures (``check:subject``, fnmatch patterns) by which
each command recognises it.

The commands stay strict: they exit 1 while any anomaly reproduces, known or not, and print which are
known. ``tests/test_reliability.py`` fails on any anomaly whose signature is *not* listed here, so that
everything else still breaks the build; with ``RELIABILITY_STRICT=1`` it accepts none. Remove an entry in
the change that fixes it (the suite then guards the fix).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase


@dataclass(frozen=True)
class Issue:
    title: str
    reproduce: str
    signatures: dict[str, tuple[str, ...]] = field(default_factory=dict)  # mode -> patterns


# None open: RL-6 (lax coercions, UTF-16 bodies), RL-9 (body parsed before authentication) and RL-13 (a literal
# path segment beside a parameter) were fixed in the changes that removed their entries.
ISSUES: dict[str, Issue] = {}


def known(mode: str, signature: str) -> str | None:
    """The id of the known issue an anomaly signature belongs to, if any."""
    for issue_id, issue in ISSUES.items():
        if any(fnmatchcase(signature, pattern) for pattern in issue.signatures.get(mode, ())):
            return issue_id
    return None
