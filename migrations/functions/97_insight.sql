-- Insight (issue 17): the store step of a refresh of one programme's RFM scores, segments and stages. The steps
-- before it (app/insight/queries.py, run by app/insight/service.py in the same transaction) leave the new rows in
-- the temporary table `insight_new`; this function compares them with the rows of the previous refresh, announces
-- every member whose segment changed (member.segment_changed, set-based), records the refresh with its summary,
-- and makes the programme's rows of member_insights the new ones (rewriting only the rows that changed). plpgsql: the temporary table exists only at run time.
CREATE FUNCTION ledger.insight_store(p_program uuid, p_as_of timestamptz, p_window_days integer,
                                     p_median numeric, p_thresholds jsonb)
RETURNS TABLE (refresh_id bigint, members bigint, changed bigint) LANGUAGE plpgsql AS $$
DECLARE
    v_refresh bigint;
    v_previous bigint;
    v_members bigint;
    v_changed bigint;
BEGIN
    SELECT max(r.id) INTO v_previous FROM insight_refreshes r WHERE r.program_id = p_program;
    -- Members whose segment or stage differs from the previous refresh (a member enrolled since comes from NULL).
    -- The first refresh of a programme has nothing to compare with: no movement, no events.
    CREATE TEMP TABLE insight_moves ON COMMIT DROP AS
    SELECT n.member_id, o.segment AS old_segment, o.stage AS old_stage, n.segment, n.stage
      FROM insight_new n LEFT JOIN member_insights o ON o.member_id = n.member_id
     WHERE v_previous IS NOT NULL
       AND (o.segment IS DISTINCT FROM n.segment OR o.stage IS DISTINCT FROM n.stage);
    SELECT count(*) INTO v_members FROM insight_new;
    SELECT count(*) INTO v_changed FROM insight_moves mv WHERE mv.segment IS DISTINCT FROM mv.old_segment;

    INSERT INTO insight_refreshes (program_id, as_of, window_days, median_interval_days, thresholds, members, summary)
    SELECT p_program, p_as_of, p_window_days, p_median, p_thresholds, v_members, jsonb_build_object(
        'segments', (SELECT coalesce(jsonb_agg(jsonb_build_object('segment', s.segment, 'members', s.n,
                                                                  'spend', s.spend::text) ORDER BY s.segment), '[]')
                       FROM (SELECT n.segment, count(*) AS n, sum(n.monetary) AS spend
                               FROM insight_new n GROUP BY n.segment) s),
        'stages', (SELECT coalesce(jsonb_agg(jsonb_build_object('stage', s.stage, 'members', s.n,
                                                                'spend', s.spend::text) ORDER BY s.stage), '[]')
                     FROM (SELECT n.stage, count(*) AS n, sum(n.monetary) AS spend
                             FROM insight_new n GROUP BY n.stage) s),
        'segment_moves', (SELECT coalesce(jsonb_agg(jsonb_build_object('from', t.old_segment, 'to', t.segment,
                                                                       'members', t.n)), '[]')
                            FROM (SELECT mv.old_segment, mv.segment, count(*) AS n FROM insight_moves mv
                                   WHERE mv.segment IS DISTINCT FROM mv.old_segment GROUP BY 1, 2) t),
        'stage_moves', (SELECT coalesce(jsonb_agg(jsonb_build_object('from', t.old_stage, 'to', t.stage,
                                                                     'members', t.n)), '[]')
                          FROM (SELECT mv.old_stage, mv.stage, count(*) AS n FROM insight_moves mv
                                 WHERE mv.stage IS DISTINCT FROM mv.old_stage GROUP BY 1, 2) t))
    RETURNING id INTO v_refresh;

    INSERT INTO changes (xid, program_id, member_id, type, occurred_at, data)
    SELECT ledger.change_position(mv.member_id), p_program, mv.member_id, 'member.segment_changed', p_as_of,
           json_build_object('member_id', m.external_id, 'segment', mv.segment, 'previous_segment', mv.old_segment,
                             'stage', mv.stage, 'previous_stage', mv.old_stage, 'as_of', ledger.ts(p_as_of))
      FROM insight_moves mv JOIN members m ON m.id = mv.member_id
     WHERE mv.segment IS DISTINCT FROM mv.old_segment;

    -- The programme's rows become the new ones, rewriting only what changed: recency is not stored (it is the days
    -- from last_purchase_on to the refresh's as_of), so a member who did nothing keeps its row as it is.
    UPDATE member_insights i
       SET first_purchase_on = n.first_day, last_purchase_on = n.last_day, frequency = n.frequency,
           monetary = n.monetary, r_score = n.r_score, f_score = n.f_score, m_score = n.m_score, segment = n.segment,
           stage = n.stage
      FROM insight_new n
     WHERE i.member_id = n.member_id
       AND (i.first_purchase_on, i.last_purchase_on, i.frequency, i.monetary, i.r_score, i.f_score, i.m_score,
            i.segment, i.stage)
           IS DISTINCT FROM
           (n.first_day, n.last_day, n.frequency, n.monetary, n.r_score, n.f_score, n.m_score, n.segment, n.stage);
    INSERT INTO member_insights (member_id, program_id, first_purchase_on, last_purchase_on, frequency, monetary,
                                 r_score, f_score, m_score, segment, stage)
    SELECT n.member_id, p_program, n.first_day, n.last_day, n.frequency, n.monetary, n.r_score, n.f_score, n.m_score,
           n.segment, n.stage
      FROM insight_new n
     WHERE NOT EXISTS (SELECT 1 FROM member_insights i WHERE i.member_id = n.member_id);
    DELETE FROM member_insights i
     WHERE i.program_id = p_program AND NOT EXISTS (SELECT 1 FROM insight_new n WHERE n.member_id = i.member_id);
    DROP TABLE insight_moves;
    RETURN QUERY SELECT v_refresh, v_members, v_changed;
END $$;

-- The month of an instant as a number (year * 12 + month - 1, UTC): lot ages and cohorts of the liability forecast
-- (app/insight/forecast.py).
CREATE FUNCTION ledger.month_index(p_at timestamptz) RETURNS integer LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT (extract(year FROM p_at AT TIME ZONE 'UTC') * 12 + extract(month FROM p_at AT TIME ZONE 'UTC') - 1)::integer
$$;

-- A member's age band on a day (audiences; app/insight/rfm.py age_band is the same rule). NULL without a birthday.
CREATE FUNCTION ledger.age_band(p_birthday date, p_on date) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_birthday IS NULL THEN NULL
                WHEN a < 18 THEN 'under_18' WHEN a < 25 THEN '18_24' WHEN a < 35 THEN '25_34'
                WHEN a < 45 THEN '35_44' WHEN a < 55 THEN '45_54' WHEN a < 65 THEN '55_64' ELSE '65_plus' END
      FROM (SELECT extract(year FROM age(p_on, p_birthday))::integer AS a) x
$$;
