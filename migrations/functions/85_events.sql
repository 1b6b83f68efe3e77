-- Custom events (survey_completed, ...): points by the event rules, within per-day/month/ever limits. As for
-- purchases, the service evaluates (app/earning/rules.py evaluate_event) from what ledger.event_context reads, and
-- ledger.event posts, checking the member's facts version under its lock.

CREATE TYPE ledger.event_context AS (
    member_pk bigint,          -- NULL: not a member yet (the post enrols it)
    facts_version bigint,
    count_today integer,       -- this member's earlier awards of this event in the local day, month, ever
    count_this_month integer,
    count_ever integer,
    existing_member_ref text,  -- the event already posted with this event id, if any
    existing_name text
);

CREATE FUNCTION ledger.event_context(p_program uuid, p_member_ref text, p_event_id text, p_name text,
                                     p_day_start timestamptz, p_month_start timestamptz)
RETURNS SETOF ledger.event_context LANGUAGE sql STABLE AS $$
    SELECT m.id, b.facts_version, coalesce(c.today, 0), coalesce(c.this_month, 0), coalesce(c.ever, 0),
           x.member_ref, x.name
      FROM (SELECT 1) one
      LEFT JOIN ledger.member(p_program, p_member_ref) m ON true
      LEFT JOIN member_balances b ON b.member_id = m.id
      LEFT JOIN LATERAL (
          SELECT count(*) FILTER (WHERE e.occurred_at >= p_day_start
                                    AND e.occurred_at < p_day_start + interval '1 day')::integer AS today,
                 count(*) FILTER (WHERE e.occurred_at >= p_month_start
                                    AND e.occurred_at < p_month_start + interval '1 month')::integer AS this_month,
                 count(*)::integer AS ever
            FROM member_events e WHERE e.member_id = m.id AND e.name = p_name AND e.points > 0
      ) c ON m.id IS NOT NULL
      LEFT JOIN LATERAL (
          SELECT mm.external_id AS member_ref, e.name FROM member_events e JOIN members mm ON mm.id = e.member_id
           WHERE e.program_id = p_program AND e.event_id = p_event_id
      ) x ON true
$$;

CREATE FUNCTION ledger.event_json(p_event_pk bigint, p_replayed boolean) RETURNS SETOF json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'event_id', e.event_id, 'member_id', m.external_id, 'name', e.name, 'points', e.points,
        'evaluation', coalesce(e.evaluation, json_build_object('event_name', e.name, 'points', e.points,
                                                               'limited_by', NULL, 'limit', NULL)),
        'entry_id', ledger.public_id('ent', e.entry_id), 'balance', (SELECT j FROM ledger.balance_json(m.id) j),
        'replayed', p_replayed)
    FROM member_events e JOIN members m ON m.id = e.member_id
    WHERE e.id = p_event_pk
$$;

-- Post a custom event's points (immediately available: events have no return window). The event id is unique per
-- program: again for the same member and name, the original answer (200, "replayed"); otherwise
-- external_ref_conflict.
CREATE FUNCTION ledger.event(
    p_program uuid, p_key text, p_fingerprint bytea, p_member_ref text, p_member_pk bigint, p_facts_version bigint,
    p_enrol boolean, p_event_id text, p_name text, p_occurred_at timestamptz, p_points bigint, p_evaluation json,
    p_metadata jsonb, p_expires_at timestamptz, p_expires_on_inactivity boolean, p_activity_expires_at timestamptz)
RETURNS ledger.answer LANGUAGE plpgsql AS $$
DECLARE
    a ledger.answer := ledger.stored_answer(p_program, p_key, p_fingerprint);
    x member_events%ROWTYPE;
    v_ref text;
    mb record;
    v_event bigint;
    v_entry bigint;
    v_body json;
    e record;
BEGIN
    IF a.status IS NOT NULL THEN
        RETURN a;
    END IF;
    SELECT * INTO x FROM member_events WHERE program_id = p_program AND event_id = p_event_id;
    IF FOUND THEN
        SELECT external_id INTO v_ref FROM members WHERE id = x.member_id;
        IF x.name <> p_name OR v_ref <> p_member_ref THEN
            RETURN ledger.refusal('external_ref_conflict');
        END IF;
        RETURN ledger.respond(p_program, p_key, p_fingerprint, 200, (SELECT j FROM ledger.event_json(x.id, true) j),
                              true);
    END IF;
    mb := ledger.earning_member(p_program, p_member_ref, p_member_pk, p_facts_version, p_enrol);
    IF mb.status <> 'ok' THEN
        RETURN ledger.refusal(mb.status);
    END IF;
    PERFORM ledger.note_activity(mb.member_pk, p_activity_expires_at);
    IF p_points > 0 THEN
        e := ledger.post(p_program, mb.member_pk, 'event', p_occurred_at, ARRAY['issued', 'available'],
                         ARRAY[-p_points, p_points], p_event_id, p_name,
                         coalesce(p_metadata, '{}') || jsonb_build_object('event', p_name));
        v_entry := e.entry_pk;
        PERFORM ledger.credit_lot(p_program, mb.member_pk, e.entry_pk, p_points, e.available_before, p_occurred_at,
                                  p_expires_at, false, p_expires_on_inactivity);
    END IF;
    INSERT INTO member_events (program_id, member_id, event_id, name, occurred_at, points, entry_id, evaluation)
    VALUES (p_program, mb.member_pk, p_event_id, p_name, p_occurred_at, p_points, v_entry, p_evaluation)
    RETURNING id INTO v_event;
    UPDATE member_balances SET facts_version = facts_version + 1 WHERE member_id = mb.member_pk;
    v_body := (SELECT j FROM ledger.event_json(v_event, false) j);
    IF p_points > 0 THEN
        PERFORM ledger.emit(p_program, mb.member_pk, 'points.earned', p_occurred_at, v_body);
    END IF;
    RETURN ledger.respond(p_program, p_key, p_fingerprint, 201, v_body);
END $$;

CREATE TRIGGER member_events_append_only BEFORE UPDATE OR DELETE ON member_events
    FOR EACH ROW EXECUTE FUNCTION ledger.forbid_change();
