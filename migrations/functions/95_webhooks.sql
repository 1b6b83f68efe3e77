-- Webhooks: the changes of a program delivered to its endpoints, at least once, signed (app/events/webhooks.py
-- signs and sends; these functions keep the queue).
--
-- Fan-out: each enabled endpoint has a position in its program's feed; ledger.webhook_fan_out turns the changes
-- after it (of the endpoint's types) into deliveries and moves it, with the feed's own horizon, so no change is
-- skipped whatever order transactions commit in. Claim: ledger.webhook_claim leases due deliveries (FOR UPDATE SKIP
-- LOCKED, so no two processes ever send the same attempt), and only the oldest pending delivery of each member and
-- endpoint: one member's changes go out in order. Result: ledger.webhook_record logs the attempt and settles the
-- delivery (delivered, retried later, or failed for good), and disables an endpoint that has been failing too long.
--
-- One member's deliveries, one at a time. Of the pending deliveries of a member (and endpoint) at most one is due:
-- the oldest; the others wait with next_attempt_at = 'infinity', as do the deliveries of a disabled endpoint. So
-- the claim is a plain walk of due deliveries in time order (whatever the statistics say), and never wades through
-- a hot member's backlog or a paused endpoint's queue. Settling a delivery makes the member's next one due
-- (ledger.webhook_settled); a redelivery or a recovery puts the member's queue back in that shape
-- (ledger.webhook_normalize). A race between a fan-out and a settlement can leave a queue with none due, never
-- with two: ledger.webhook_wake, run every few seconds, makes due every waiting delivery that heads its queue.

CREATE FUNCTION ledger.webhook_fan_out(p_limit integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    ep record;
    v_horizon bigint := ledger.changes_horizon();
    v_count integer := 0;
    v_added integer;
    v_xid bigint;
    v_id bigint;
BEGIN
    FOR ep IN SELECT * FROM webhook_endpoints WHERE enabled ORDER BY id FOR UPDATE SKIP LOCKED LOOP
        WITH scanned AS (
            SELECT c.id, c.xid, c.member_id, c.type FROM changes c
             WHERE c.program_id = ep.program_id AND (c.xid, c.id) > (ep.position_xid, ep.position_id)
               AND c.xid < v_horizon
             ORDER BY c.xid, c.id LIMIT p_limit
        ), added AS (
            INSERT INTO webhook_deliveries (endpoint_id, change_id, change_xid, member_id, next_attempt_at)
            SELECT ep.id, s.id, s.xid, s.member_pk,
                   CASE WHEN row_number() OVER (PARTITION BY s.member_pk ORDER BY s.xid, s.id) = 1
                             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries x
                                              WHERE x.endpoint_id = ep.id AND x.member_id = s.member_pk
                                                AND x.status = 'pending')
                        THEN now() ELSE 'infinity' END
              FROM (SELECT s.*, coalesce(s.member_id, 0) AS member_pk FROM scanned s) s
             WHERE cardinality(ep.event_types) = 0 OR s.type = ANY (ep.event_types)
            ON CONFLICT (endpoint_id, change_id) DO NOTHING
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM added), l.xid, l.id INTO v_added, v_xid, v_id
          FROM (SELECT 1) one LEFT JOIN (SELECT s.xid, s.id FROM scanned s ORDER BY s.xid DESC, s.id DESC LIMIT 1) l
            ON true;
        IF v_xid IS NOT NULL THEN
            UPDATE webhook_endpoints SET position_xid = v_xid, position_id = v_id WHERE id = ep.id;
        END IF;
        v_count := v_count + v_added;
    END LOOP;
    RETURN v_count;
END $$;

CREATE FUNCTION ledger.webhook_claim(p_limit integer, p_lease_seconds integer)
RETURNS TABLE (delivery_id bigint, endpoint_id uuid, url text, secret text, previous_secret text, attempts integer,
               event_id text, body text)
LANGUAGE sql AS $$
    WITH due AS (
        SELECT d.id FROM webhook_deliveries d
         WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND (d.lease_until IS NULL OR d.lease_until < now())
           AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.id = d.endpoint_id AND e.enabled)
         ORDER BY d.next_attempt_at, d.id
         LIMIT p_limit
           FOR UPDATE OF d SKIP LOCKED
    ), claimed AS (
        UPDATE webhook_deliveries d
           SET lease_until = now() + make_interval(secs => p_lease_seconds), attempts = d.attempts + 1
          FROM due WHERE d.id = due.id
        RETURNING d.id, d.endpoint_id, d.change_id, d.attempts
    )
    SELECT c.id, c.endpoint_id, e.url, e.secret,
           CASE WHEN e.previous_secret_until > now() THEN e.previous_secret END, c.attempts,
           ledger.public_id('evt', c.change_id), (SELECT j::text FROM ledger.change_json(c.change_id) j)
      FROM claimed c JOIN webhook_endpoints e ON e.id = c.endpoint_id
$$;

-- The next pending delivery of the member, now that the one before it is settled, is due at once.
CREATE FUNCTION ledger.webhook_settled(p_endpoint uuid, p_member_pk bigint) RETURNS void LANGUAGE sql AS $$
    UPDATE webhook_deliveries SET next_attempt_at = now()
     WHERE id = (SELECT x.id FROM webhook_deliveries x
                  WHERE x.endpoint_id = p_endpoint AND x.member_id = p_member_pk AND x.status = 'pending'
                  ORDER BY x.change_xid, x.change_id LIMIT 1)
       AND next_attempt_at = 'infinity'
$$;

-- Every waiting delivery (of one endpoint, or all) that heads its member's queue, of an enabled endpoint: due now.
CREATE FUNCTION ledger.webhook_wake(p_endpoint uuid DEFAULT NULL) RETURNS integer LANGUAGE sql AS $$
    WITH woken AS (
        UPDATE webhook_deliveries d SET next_attempt_at = now()
          FROM webhook_endpoints e
         WHERE e.id = d.endpoint_id AND e.enabled AND (p_endpoint IS NULL OR e.id = p_endpoint)
           AND d.status = 'pending' AND d.next_attempt_at = 'infinity'
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries x
                            WHERE x.endpoint_id = d.endpoint_id AND x.member_id = d.member_id AND x.status = 'pending'
                              AND (x.change_xid, x.change_id) < (d.change_xid, d.change_id))
        RETURNING 1
    )
    SELECT count(*)::integer FROM woken
$$;

-- The pending deliveries of an endpoint (of one member, or all), with the oldest of each member due (now, unless it
-- waits for a retry already) and the others waiting. After a redelivery or a recovery made older ones pending again.
CREATE FUNCTION ledger.webhook_normalize(p_endpoint uuid, p_member_pk bigint DEFAULT NULL) RETURNS void
LANGUAGE sql AS $$
    WITH queue AS (
        SELECT d.id, d.next_attempt_at,
               row_number() OVER (PARTITION BY d.member_id ORDER BY d.change_xid, d.change_id) AS n
          FROM webhook_deliveries d
         WHERE d.endpoint_id = p_endpoint AND d.status = 'pending'
           AND (p_member_pk IS NULL OR d.member_id = p_member_pk)
    )
    UPDATE webhook_deliveries d
       SET next_attempt_at = CASE WHEN q.n > 1 THEN 'infinity'
                                  WHEN q.next_attempt_at = 'infinity' THEN now() ELSE q.next_attempt_at END
      FROM queue q
     WHERE d.id = q.id AND d.next_attempt_at IS DISTINCT FROM
           CASE WHEN q.n > 1 THEN 'infinity'
                WHEN q.next_attempt_at = 'infinity' THEN now() ELSE q.next_attempt_at END
$$;

-- An endpoint paused (disabled): its queue waits, out of the claim's way.
CREATE FUNCTION ledger.webhook_pause(p_endpoint uuid) RETURNS void LANGUAGE sql AS $$
    UPDATE webhook_deliveries SET next_attempt_at = 'infinity'
     WHERE endpoint_id = p_endpoint AND status = 'pending' AND next_attempt_at <> 'infinity'
$$;

-- Settle one attempt. p_delivered: the receiver answered 2xx; else p_retry_at (NULL: give up, 'failed').
-- An endpoint failing without a success since p_disable_after ago is disabled, and that is announced.
CREATE FUNCTION ledger.webhook_record(p_delivery bigint, p_status_code integer, p_latency_ms integer, p_snippet text,
                                      p_error text, p_delivered boolean, p_retry_at timestamptz,
                                      p_disable_after interval)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_endpoint uuid;
    v_member bigint;
    ep webhook_endpoints%ROWTYPE;
BEGIN
    INSERT INTO webhook_attempts (delivery_id, status_code, latency_ms, response_snippet, error)
    VALUES (p_delivery, p_status_code, p_latency_ms, left(p_snippet, 500), left(p_error, 500));
    UPDATE webhook_deliveries
       SET status = CASE WHEN p_delivered THEN 'delivered' WHEN p_retry_at IS NULL THEN 'failed' ELSE 'pending' END,
           next_attempt_at = coalesce(p_retry_at, next_attempt_at), lease_until = NULL,
           last_status = p_status_code, last_error = left(p_error, 500),
           delivered_at = CASE WHEN p_delivered THEN now() END
     WHERE id = p_delivery
    RETURNING endpoint_id, member_id INTO v_endpoint, v_member;
    IF p_delivered OR p_retry_at IS NULL THEN
        PERFORM ledger.webhook_settled(v_endpoint, v_member);
    ELSIF NOT (SELECT e.enabled FROM webhook_endpoints e WHERE e.id = v_endpoint) THEN
        PERFORM ledger.webhook_pause(v_endpoint);  -- disabled while this attempt was under way
    END IF;
    IF p_delivered THEN
        UPDATE webhook_endpoints SET failing_since = NULL WHERE id = v_endpoint AND failing_since IS NOT NULL;
        RETURN;
    END IF;
    UPDATE webhook_endpoints SET failing_since = now() WHERE id = v_endpoint AND failing_since IS NULL;
    SELECT * INTO ep FROM webhook_endpoints WHERE id = v_endpoint;
    IF ep.enabled AND ep.failing_since < now() - p_disable_after THEN
        UPDATE webhook_endpoints SET enabled = false, updated_at = now(),
               disabled_reason = format('no successful delivery since %s', ledger.ts(ep.failing_since))
         WHERE id = ep.id AND enabled;
        IF FOUND THEN
            PERFORM ledger.webhook_pause(ep.id);
            PERFORM ledger.emit(ep.program_id, NULL, 'webhook_endpoint.disabled', now(), json_build_object(
                'endpoint', json_build_object('id', ep.id, 'url', ep.url, 'failing_since', ledger.ts(ep.failing_since))));
        END IF;
    END IF;
END $$;
