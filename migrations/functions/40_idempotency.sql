-- Idempotency lives with the effect: a write function looks its Idempotency-Key up first (a stored answer is
-- replayed; the key used for another request is refused), and stores its answer under the key in the same
-- statement as its effect. Two concurrent requests with one key: the second one's INSERT of the key waits for
-- the first to commit, then fails with a unique violation, so its statement (effect included) rolls back;
-- the caller runs it again and it replays (app/ledger/writes.py).

-- The stored answer of a key, or NULL (all fields) when the key is new.
CREATE FUNCTION ledger.stored_answer(p_program uuid, p_key text, p_fingerprint bytea) RETURNS ledger.answer
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN k.request_hash = p_fingerprint
                THEN ROW('ok', k.status_code, k.response_body, true, NULL)::ledger.answer
                ELSE ledger.refusal('idempotency_key_reused') END
      FROM idempotency_keys k WHERE k.program_id = p_program AND k.key = p_key
$$;

-- A successful answer: the HTTP status and the body, stored under the key (no key: internal callers).
-- p_replayed: the answer repeats an earlier effect found by its natural key (an order id, a return id, an event
-- id posted before), which the response says as a key replay does.
CREATE FUNCTION ledger.respond(p_program uuid, p_key text, p_fingerprint bytea, p_http_status integer, p_body json,
                               p_replayed boolean DEFAULT false)
RETURNS ledger.answer LANGUAGE plpgsql AS $$
BEGIN
    IF p_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (program_id, key, request_hash, status_code, response_body)
        VALUES (p_program, p_key, p_fingerprint, p_http_status, p_body::text);
    END IF;
    RETURN ROW('ok', p_http_status, p_body::text, p_replayed, NULL)::ledger.answer;
END $$;

-- Remember a refusal (its problem body rendered by the service) under the key, unless the key was stored
-- meanwhile: then that stored answer (a replay, or idempotency_key_reused).
CREATE FUNCTION ledger.remember(p_program uuid, p_key text, p_fingerprint bytea, p_http_status integer,
                                p_body text) RETURNS ledger.answer
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO idempotency_keys (program_id, key, request_hash, status_code, response_body)
    VALUES (p_program, p_key, p_fingerprint, p_http_status, p_body) ON CONFLICT DO NOTHING;
    IF FOUND THEN
        RETURN ROW('ok', p_http_status, p_body, false, NULL)::ledger.answer;
    END IF;
    RETURN ledger.stored_answer(p_program, p_key, p_fingerprint);
END $$;
