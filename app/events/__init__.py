"""Events out: the change feed and webhooks (the outbox is written by the SQL functions: ledger.emit)."""
