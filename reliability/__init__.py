"""Reliability and security proofs of points-ledger, each a command (see reliability/README.md):

* ``python -m reliability.bank``: a bank-style invariant test under concurrent, colliding writes;
* ``python -m reliability.crash``: the same workload while the service is SIGKILLed and Postgres stopped;
* ``python -m reliability.fuzz``: schemathesis against the committed OpenAPI document, plus explicit bad input;
* ``python -m reliability.security``: authentication, scopes, tenant isolation, key storage, CORS, error bodies.

Each runs the real service as a process on 127.0.0.1 against its own database, bounds every loop in count
and time, prints a one-line summary last and exits 0 only when it found nothing.
"""
