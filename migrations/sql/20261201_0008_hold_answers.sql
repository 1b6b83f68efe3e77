-- Capturing or voiding a hold answers in one round trip, as redeeming and holding do (migration 0006).

-- The hold and redemption reads as SQL functions (inlined by the planner), for the functions below and for
-- app/redemption's reads. An open hold past its expiry reads as expired even before the release job has run.
CREATE FUNCTION ledger_hold_view(p_program uuid, p_hold bigint)
RETURNS TABLE (id bigint, member_id text, points bigint, captured_points bigint, status text, reference text,
               description text, expires_at timestamptz, created_at timestamptz, resolved_at timestamptz,
               hold_entry_id bigint, resolve_entry_id bigint, redemption_id bigint)
LANGUAGE sql STABLE AS $$
    SELECT h.id, m.external_id AS member_id, h.points, h.captured_points,
           CASE WHEN h.status = 'open' AND h.expires_at <= now() THEN 'expired' ELSE h.status END AS status,
           h.reference, h.description, h.expires_at, h.created_at, h.resolved_at, h.hold_entry_id,
           h.resolve_entry_id, (SELECT r.id FROM redemptions r WHERE r.hold_id = h.id) AS redemption_id
    FROM holds h JOIN members m ON m.id = h.member_id
    WHERE h.program_id = p_program AND h.id = p_hold
$$;

CREATE FUNCTION ledger_redemption_view(p_program uuid, p_redemption bigint)
RETURNS TABLE (id bigint, member_id text, points bigint, refunded_points bigint, reference text, entry_id bigint,
               hold_id bigint, created_at timestamptz, refunds json)
LANGUAGE sql STABLE AS $$
    SELECT r.id, m.external_id AS member_id, r.points, r.refunded_points, r.reference, r.entry_id, r.hold_id,
           r.created_at,
           (SELECT coalesce(json_agg(json_build_object(
                       'id', f.id, 'entry_id', f.entry_id, 'points', f.points,
                       'available_points', f.available_points, 'expired_points', f.expired_points,
                       'created_at', f.created_at) ORDER BY f.id), '[]'::json)
              FROM redemption_refunds f WHERE f.redemption_id = r.id) AS refunds
    FROM redemptions r JOIN members m ON m.id = r.member_id
    WHERE r.program_id = p_program AND r.id = p_redemption
$$;

-- Resolve a hold (p_kind 'capture' with p_points, or 'void'), then answer, by statements after the
-- resolution's (so they see it) under the member's lock still held: the hold, the redemption a capture
-- made, and the member's balance, each as a JSON object. A refusal answers its status and nulls.
CREATE FUNCTION ledger_resolve_hold(p_program uuid, p_hold bigint, p_kind text, p_points bigint,
                                    p_now timestamptz)
RETURNS TABLE (status text, entry_id bigint, redemption_id bigint, hold jsonb, redemption jsonb, balance jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_status text;
    v_entry bigint;
    v_redemption bigint;
    v_hold jsonb;
BEGIN
    IF p_kind = 'capture' THEN
        SELECT c.status, c.entry_id, c.redemption_id INTO v_status, v_entry, v_redemption
          FROM ledger_capture_hold(p_program, p_hold, p_points, p_now) c;
    ELSE
        SELECT r.status, r.entry_id INTO v_status, v_entry FROM ledger_release_hold(p_program, p_hold, p_kind, p_now) r;
    END IF;
    IF v_status <> 'ok' THEN
        RETURN QUERY SELECT v_status, NULL::bigint, NULL::bigint, NULL::jsonb, NULL::jsonb, NULL::jsonb;
        RETURN;
    END IF;
    SELECT to_jsonb(h) INTO v_hold FROM ledger_hold_view(p_program, p_hold) h;
    RETURN QUERY
    SELECT v_status, v_entry, v_redemption, v_hold,
           (SELECT to_jsonb(r) FROM ledger_redemption_view(p_program, v_redemption) r),
           (SELECT to_jsonb(b) FROM ledger_balance(p_program, v_hold ->> 'member_id') b);
END $$;
