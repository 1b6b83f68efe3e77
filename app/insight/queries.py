"""The SQL of insight. The refresh runs these steps in one transaction per programme, then
``ledger.insight_store`` (migrations/functions/97_insight.sql) stores the result."""

# One refresh of a programme at a time (a second waits; the scheduler and the CLI may meet).
LOCK_PROGRAM = "SELECT pg_advisory_xact_lock(hashtextextended('insight:' || $1::uuid::text, 0))"

# Step 1: per member of the programme enrolled by the refresh's instant $2, from the daily purchase totals up to
# its UTC day D: the first and last purchase day, the purchase days, and purchases and spend of the window (the
# days after D - $3, D included). $1 program, $2 as_of, $3 window_days.
FACTS_TABLE = """
CREATE TEMP TABLE insight_facts (member_id bigint, enrolled_days integer, first_day date, last_day date,
                                 days bigint, frequency integer, monetary numeric) ON COMMIT DROP
"""
FACTS = """
INSERT INTO insight_facts
SELECT m.id AS member_id, ($2::timestamptz AT TIME ZONE 'UTC')::date - (m.created_at AT TIME ZONE 'UTC')::date
           AS enrolled_days,
       a.first_day, a.last_day, coalesce(a.days, 0) AS days,
       coalesce(a.frequency, 0)::integer AS frequency, coalesce(a.monetary, 0) AS monetary
  FROM members m
  LEFT JOIN (
      SELECT d.member_id, min(d.day) AS first_day, max(d.day) AS last_day, count(*) AS days,
             sum(d.purchases) FILTER (WHERE d.day > ($2::timestamptz AT TIME ZONE 'UTC')::date - $3::integer)
                 AS frequency,
             sum(d.spend) FILTER (WHERE d.day > ($2::timestamptz AT TIME ZONE 'UTC')::date - $3::integer)
                 AS monetary
        FROM member_purchase_days d JOIN members mm ON mm.id = d.member_id
       WHERE mm.program_id = $1 AND d.day <= ($2::timestamptz AT TIME ZONE 'UTC')::date
       GROUP BY d.member_id
  ) a ON a.member_id = m.id
 WHERE m.program_id = $1 AND m.created_at <= $2
"""

# Step 2: the programme's median inter-purchase interval in days (NULL: no member purchased on two days).
MEDIAN_INTERVAL = """
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY (f.last_day - f.first_day)::float8 / (f.days - 1))::numeric
  FROM insight_facts f WHERE f.days >= 2
"""

# Step 3: scores (1 + floor(5 (rank - 1) / n) among members who purchased, ties sharing the lowest rank), the segment
# from the map ($2 r, $3 fm, $4 segment: app/insight/rfm.py SEGMENT_MAP) and the stage (the rules of
# app/insight/rfm.py lifecycle_stage; $5 new_days, $6 at_risk_days, $7 lapsed_days). $1 as_of.
SCORE_TABLE = """
CREATE TEMP TABLE insight_new (member_id bigint, first_day date, last_day date, recency_days integer,
                               frequency integer, monetary numeric, r_score smallint, f_score smallint,
                               m_score smallint, segment text, stage text) ON COMMIT DROP
"""
SCORE = """
INSERT INTO insight_new
WITH scored AS (
    SELECT f.*, ($1::timestamptz AT TIME ZONE 'UTC')::date - f.last_day AS recency_days,
           CASE WHEN f.last_day IS NOT NULL THEN
               1 + (5 * (rank() OVER (PARTITION BY f.last_day IS NULL ORDER BY f.last_day) - 1))
                   / count(*) OVER (PARTITION BY f.last_day IS NULL) END AS r_score,
           CASE WHEN f.last_day IS NOT NULL THEN
               1 + (5 * (rank() OVER (PARTITION BY f.last_day IS NULL ORDER BY f.frequency) - 1))
                   / count(*) OVER (PARTITION BY f.last_day IS NULL) END AS f_score,
           CASE WHEN f.last_day IS NOT NULL THEN
               1 + (5 * (rank() OVER (PARTITION BY f.last_day IS NULL ORDER BY f.monetary) - 1))
                   / count(*) OVER (PARTITION BY f.last_day IS NULL) END AS m_score
      FROM insight_facts f
)
SELECT s.member_id, s.first_day, s.last_day, s.recency_days, s.frequency, s.monetary,
       s.r_score::smallint, s.f_score::smallint, s.m_score::smallint, map.segment,
       CASE WHEN s.last_day IS NULL THEN CASE WHEN s.enrolled_days < $5 THEN 'new' ELSE 'lapsed' END
            WHEN s.recency_days >= $7 THEN 'lapsed'
            WHEN s.recency_days >= $6 THEN 'at_risk'
            WHEN ($1::timestamptz AT TIME ZONE 'UTC')::date - s.first_day < $5 THEN 'new'
            WHEN s.days >= 2 AND s.last_day - (SELECT max(d.day) FROM member_purchase_days d
                                                WHERE d.member_id = s.member_id AND d.day < s.last_day) >= $7
                THEN 'reactivated'
            ELSE 'active' END AS stage
  FROM scored s
  LEFT JOIN unnest($2::integer[], $3::integer[], $4::text[]) AS map(r, fm, segment)
    ON map.r = s.r_score AND map.fm = (s.f_score + s.m_score + 1) / 2
"""

STORE = """
SELECT refresh_id, members, changed
  FROM ledger.insight_store(p_program => $1, p_as_of => $2, p_window_days => $3, p_median => $4,
                            p_thresholds => $5::jsonb)
"""

DROP_TEMP = "DROP TABLE IF EXISTS insight_new, insight_facts"

# Whether a programme's last refresh is older than $2 seconds (or it was never refreshed): the scheduler's rule.
STALE = """
SELECT coalesce(max(recorded_at) < now() - make_interval(secs => $2), true) FROM insight_refreshes WHERE program_id = $1
"""

PROGRAMS = "SELECT id, settings FROM programs WHERE $1::uuid IS NULL OR id = $1 ORDER BY created_at, id"

MEMBERS_OF = "SELECT count(*) FROM members WHERE program_id = $1 AND created_at <= $2"

# A member's insight: the member (404 when not of the programme), its row of the last refresh (if any), and its
# balance row.
MEMBER = """
SELECT m.id AS member_pk, m.external_id, r.as_of, r.window_days, i.first_purchase_on, i.last_purchase_on,
       (r.as_of AT TIME ZONE 'UTC')::date - i.last_purchase_on AS recency_days, i.frequency, i.monetary,
       i.r_score, i.f_score, i.m_score, i.segment, i.stage,
       coalesce(b.available, 0) AS available, coalesce(b.pending, 0) AS pending, coalesce(b.held, 0) AS held,
       coalesce(b.lifetime_earned, 0) AS lifetime_earned, coalesce(b.lifetime_redeemed, 0) AS lifetime_redeemed
  FROM ledger.member($1, $2) m
  LEFT JOIN member_insights i ON i.member_id = m.id
  LEFT JOIN LATERAL (SELECT x.as_of, x.window_days FROM insight_refreshes x
                      WHERE x.program_id = m.program_id AND i.member_id IS NOT NULL
                      ORDER BY x.id DESC LIMIT 1) r ON true
  LEFT JOIN member_balances b ON b.member_id = m.id
"""

# The last two refreshes of a programme, newest first.
LAST_REFRESHES = """
SELECT id, as_of, window_days, median_interval_days, thresholds, members, summary
  FROM insight_refreshes WHERE program_id = $1 ORDER BY id DESC LIMIT 2
"""

# A page of a segment's members in member-row order after $3 (a row id; 0 from the start), $4 + 1 rows; spend rounded
# to $5 decimals (the currency's).
SEGMENT_PAGE = """
SELECT i.member_id AS member_pk, m.external_id,
       (SELECT (x.as_of AT TIME ZONE 'UTC')::date FROM insight_refreshes x WHERE x.program_id = $1
         ORDER BY x.id DESC LIMIT 1) - i.last_purchase_on AS recency_days,
       i.frequency, round(i.monetary, $5) AS monetary,
       i.r_score, i.f_score,
       i.m_score, i.segment, i.stage, i.last_purchase_on
  FROM member_insights i JOIN members m ON m.id = i.member_id
 WHERE i.program_id = $1 AND i.segment = $2 AND i.member_id > $3
 ORDER BY i.member_id
 LIMIT $4
"""

# The export ($3: the currency's decimals): the same rows with the contact details a campaign needs. An erased
# member's are NULL (erasure empties them), so they never appear.
SEGMENT_EXPORT = """
SELECT m.external_id AS member_id, m.name, m.email, m.phone, i.segment, i.stage,
       (SELECT (x.as_of AT TIME ZONE 'UTC')::date FROM insight_refreshes x WHERE x.program_id = $1
         ORDER BY x.id DESC LIMIT 1) - i.last_purchase_on AS recency_days, i.frequency,
       round(i.monetary, $3) AS monetary, i.r_score, i.f_score, i.m_score, i.last_purchase_on
  FROM member_insights i JOIN members m ON m.id = i.member_id
 WHERE i.program_id = $1 AND i.segment = $2
 ORDER BY i.member_id
"""

# Cursors: opaque (ledger.public_id of the member row), never a row id in the clear.
CURSOR_OUT = "SELECT ledger.public_id('mbr', $1::bigint)"
CURSOR_IN = "SELECT ledger.row_id('mbr', $1)"


# --- programme health (GET /v1/analytics/summary) ------------------------------------------------------------
# Buckets: UTC days, ISO weeks (from Monday) or calendar months, from $2 (a date, included) to $3 (excluded), cut to
# that range; $4 the granularity. Everything is dated by business time: purchases by their UTC day (the daily
# totals), ledger entries by occurred_at. $5: lapsed_days (a member lapses on the day lapsed_days after a purchase
# day not followed by another purchase within lapsed_days). $6: the day after which nothing has happened yet
# (today), so no lapse is counted before it happens.
SUMMARY = """
WITH buckets AS (
    SELECT greatest(b::date, $2::date) AS start, least((b + ('1 ' || $4)::interval)::date, $3::date) AS stop
      FROM generate_series(date_trunc($4, $2::date::timestamp), ($3::date - 1)::timestamp, ('1 ' || $4)::interval) b
), recent AS MATERIALIZED (  -- the purchase days that can count: from lapsed_days before $2 (a lapse in range)
    SELECT d.member_id, d.day, d.purchases, d.spend, lead(d.day) OVER w AS next_day,
           sum(d.purchases) OVER w AS purchases_so_far
      FROM member_purchase_days d JOIN members m ON m.id = d.member_id
     WHERE m.program_id = $1 AND d.day >= $2::date - $5::integer AND d.day < $3::date
    WINDOW w AS (PARTITION BY d.member_id ORDER BY d.day)
), repeaters AS (  -- per member buying in range: the day its purchases reached two, or whether it bought before
    SELECT r.member_id, min(r.day) FILTER (WHERE r.purchases_so_far >= 2) AS second_on,
           EXISTS (SELECT 1 FROM member_purchase_days e
                    WHERE e.member_id = r.member_id AND e.day < $2::date - $5::integer) AS earlier
      FROM recent r GROUP BY r.member_id HAVING max(r.day) >= $2::date
), buying AS (
    SELECT greatest(date_trunc($4, d.day)::date, $2::date) AS start, count(DISTINCT d.member_id) AS active,
           count(DISTINCT d.member_id) FILTER (
               WHERE r.earlier
                  OR r.second_on < least((date_trunc($4, d.day) + ('1 ' || $4)::interval)::date, $3::date))
               AS repeat,
           sum(d.purchases) AS purchases, sum(d.spend) AS spend
      FROM recent d JOIN repeaters r USING (member_id)
     WHERE d.day >= $2::date
     GROUP BY 1
), lapses AS (
    SELECT greatest(date_trunc($4, l.lapsed_on)::date, $2::date) AS start, count(*) AS lapsed
      FROM (SELECT day + $5::integer AS lapsed_on FROM recent
             WHERE next_day IS NULL OR next_day > day + $5::integer) l
     WHERE l.lapsed_on >= $2::date AND l.lapsed_on < $3::date AND l.lapsed_on <= $6::date
     GROUP BY 1
), enrolled AS (
    SELECT greatest(date_trunc($4, (m.created_at AT TIME ZONE 'UTC')::date)::date, $2::date) AS start,
           count(*) AS new
      FROM members m
     WHERE m.program_id = $1 AND m.created_at >= ($2::date)::timestamp AT TIME ZONE 'UTC'
       AND m.created_at < ($3::date)::timestamp AT TIME ZONE 'UTC'
     GROUP BY 1
), points AS (
    SELECT CASE WHEN e.occurred_at < ($2::date)::timestamp AT TIME ZONE 'UTC' THEN NULL
                ELSE greatest(date_trunc($4, (e.occurred_at AT TIME ZONE 'UTC')::date)::date, $2::date) END
               AS start,
           -sum(p.points) FILTER (WHERE p.account IN ('issued', 'adjustments')) AS issued,
           sum(p.points) FILTER (WHERE p.account = 'redeemed') AS redeemed,
           sum(p.points) FILTER (WHERE p.account = 'expired') AS expired
      FROM postings p JOIN entries e ON e.id = p.entry_id
     WHERE p.program_id = $1 AND e.occurred_at < ($3::date)::timestamp AT TIME ZONE 'UTC'
       AND p.account IN ('issued', 'adjustments', 'redeemed', 'expired')
     GROUP BY 1
), before AS (  -- the points of the entries before $2 (start NULL)
    SELECT coalesce(sum(issued), 0) AS issued, coalesce(sum(redeemed), 0) AS redeemed,
           coalesce(sum(expired), 0) AS expired
      FROM points WHERE start IS NULL
)
SELECT b.start, b.stop, coalesce(n.new, 0) AS new_members, coalesce(y.active, 0) AS active_members,
       coalesce(y.repeat, 0) AS repeat_members, coalesce(l.lapsed, 0) AS lapsed_members,
       coalesce(y.purchases, 0) AS purchases, coalesce(y.spend, 0) AS spend,
       coalesce(p.issued, 0) AS issued, coalesce(p.redeemed, 0) AS redeemed, coalesce(p.expired, 0) AS expired,
       (SELECT issued FROM before) + sum(coalesce(p.issued, 0)) OVER o AS issued_to_date,
       (SELECT redeemed FROM before) + sum(coalesce(p.redeemed, 0)) OVER o AS redeemed_to_date,
       (SELECT expired FROM before) + sum(coalesce(p.expired, 0)) OVER o AS expired_to_date
  FROM buckets b
  LEFT JOIN buying y ON y.start = b.start
  LEFT JOIN lapses l ON l.start = b.start
  LEFT JOIN enrolled n ON n.start = b.start
  LEFT JOIN points p ON p.start = b.start
WINDOW o AS (ORDER BY b.start)
 ORDER BY b.start
"""

# Retention by enrolment-month cohort: the members enrolled in each month from $2 to $3 (UTC), and how many of them
# purchased in each month from their cohort's to the month of $3 - 1 day.
COHORTS = """
WITH c AS (
    SELECT m.id, date_trunc('month', m.created_at AT TIME ZONE 'UTC')::date AS cohort FROM members m
     WHERE m.program_id = $1 AND m.created_at >= ($2::date)::timestamp AT TIME ZONE 'UTC'
       AND m.created_at < ($3::date)::timestamp AT TIME ZONE 'UTC'
), sizes AS (
    SELECT cohort, count(*) AS members FROM c GROUP BY cohort
), active AS (
    SELECT c.cohort, date_trunc('month', d.day)::date AS month, count(DISTINCT c.id) AS members
      FROM c JOIN member_purchase_days d ON d.member_id = c.id
     WHERE d.day < $3::date GROUP BY 1, 2
)
SELECT s.cohort, s.members,
       coalesce((SELECT json_object_agg(to_char(a.month, 'YYYY-MM'), a.members) FROM active a
                  WHERE a.cohort = s.cohort), '{}') AS active
  FROM sizes s ORDER BY s.cohort
"""

# The lapse threshold of the last refresh (NULL: never refreshed).
LAST_LAPSED_DAYS = """
SELECT (thresholds ->> 'lapsed_days')::integer FROM insight_refreshes WHERE program_id = $1 ORDER BY id DESC LIMIT 1
"""


# --- the liability forecast (GET /v1/analytics/liability; app/insight/forecast.py) ----------------------------
# Entry kinds whose allocations are redemptions (net: a void, release, refund or exchange refund gives back).
REDEEMING_KINDS = ["redeem", "hold", "capture", "void", "release", "refund", "exchange", "exchange_refund"]

# Per credit month (cohort) of the programme's lots credited before $2: their points.
LOT_COHORTS = """
SELECT ledger.month_index(e.occurred_at) AS cohort, sum(l.points) AS points
  FROM lots l JOIN entries e ON e.id = l.entry_id
 WHERE l.program_id = $1 AND e.occurred_at < $2
 GROUP BY 1
"""

# Per cohort and age (months from the credit to the allocation), what left the lots before $2: redeemed (net, the
# kinds $3) and everything else (expiry, clawbacks, debits by adjustment, reversals).
LOT_FLOWS = """
SELECT ledger.month_index(e.occurred_at) AS cohort,
       greatest(ledger.month_index(ae.occurred_at) - ledger.month_index(e.occurred_at), 0) AS age,
       coalesce(sum(a.points) FILTER (WHERE ae.kind = ANY ($3::text[])), 0) AS redeemed,
       coalesce(sum(a.points) FILTER (WHERE ae.kind <> ALL ($3::text[])), 0) AS removed
  FROM lots l JOIN entries e ON e.id = l.entry_id
  JOIN lot_allocations a ON a.lot_id = l.id
  JOIN entries ae ON ae.id = a.entry_id
 WHERE l.program_id = $1 AND e.occurred_at < $2 AND ae.occurred_at < $2
 GROUP BY 1, 2
"""

# The points left in open lots now, by cohort and expiry month (NULL: no date of its own), and the held points.
OPEN_POINTS = """
SELECT ledger.month_index(e.occurred_at) AS cohort,
       CASE WHEN l.expires_on_inactivity OR l.expires_at IS NULL THEN NULL
            ELSE ledger.month_index(l.expires_at) END AS expires_month,
       sum(l.remaining) AS points
  FROM lots l JOIN entries e ON e.id = l.entry_id
 WHERE l.program_id = $1 AND l.remaining > 0
 GROUP BY 1, 2
"""

LIABILITY_NOW = """
SELECT coalesce(sum(available + pending + held), 0) AS outstanding, coalesce(sum(held), 0) AS held
  FROM member_balances WHERE program_id = $1
"""


# --- audiences -----------------------------------------------------------------------------------------------

AUDIENCE_COLUMNS = "ledger.public_id('aud', id) AS id, name, filter, created_at, updated_at"

AUDIENCE_CREATE = f"""
INSERT INTO audiences (program_id, name, filter) VALUES ($1, $2, $3::jsonb)
ON CONFLICT (program_id, name) DO NOTHING
RETURNING {AUDIENCE_COLUMNS}
"""

AUDIENCE_UPDATE = f"""
UPDATE audiences SET name = $3, filter = $4::jsonb, updated_at = now()
 WHERE program_id = $1 AND id = ledger.row_id('aud', $2)
RETURNING {AUDIENCE_COLUMNS}
"""

AUDIENCE_NAME_TAKEN = """
SELECT EXISTS (SELECT 1 FROM audiences
                WHERE program_id = $1 AND name = $2 AND id <> coalesce(ledger.row_id('aud', $3), 0))
"""

AUDIENCE_GET = f"SELECT {AUDIENCE_COLUMNS} FROM audiences WHERE program_id = $1 AND id = ledger.row_id('aud', $2)"

AUDIENCE_DELETE = "DELETE FROM audiences WHERE program_id = $1 AND id = ledger.row_id('aud', $2) RETURNING id"

AUDIENCE_LIST = f"SELECT {AUDIENCE_COLUMNS} FROM audiences WHERE program_id = $1 ORDER BY name LIMIT 1000"

# The members matching a filter (every parameter NULL: no criterion): $2 segments, $3 stages, $4 tiers,
# $5 min_available, $6 max_available, $7 attributes (jsonb containment), $8 age bands on the day $9.
_AUDIENCE_WHERE = """
  FROM members m
  LEFT JOIN member_insights i ON i.member_id = m.id
  LEFT JOIN member_balances b ON b.member_id = m.id
  LEFT JOIN member_tiers t ON t.member_id = m.id
 WHERE m.program_id = $1
   AND ($2::text[] IS NULL OR i.segment = ANY ($2::text[]))
   AND ($3::text[] IS NULL OR i.stage = ANY ($3::text[]))
   AND ($4::text[] IS NULL OR t.tier = ANY ($4::text[]))
   AND ($5::bigint IS NULL OR coalesce(b.available, 0) >= $5::bigint)
   AND ($6::bigint IS NULL OR coalesce(b.available, 0) <= $6::bigint)
   AND ($7::jsonb IS NULL OR m.attributes @> $7::jsonb)
   AND ($8::text[] IS NULL OR ledger.age_band(m.birthday, $9::date) = ANY ($8::text[]))
"""

AUDIENCE_SIZE = "SELECT count(*) " + _AUDIENCE_WHERE

# A page after member row $10 (0: from the start), $11 rows.
AUDIENCE_PAGE = """
SELECT m.id AS member_pk, m.external_id, i.segment, i.stage, t.tier, coalesce(b.available, 0) AS available
""" + _AUDIENCE_WHERE + """
   AND m.id > $10
 ORDER BY m.id
 LIMIT $11
"""

AUDIENCE_EXPORT = """
SELECT m.external_id AS member_id, m.name, m.email, m.phone, i.segment, i.stage, t.tier,
       coalesce(b.available, 0) AS available
""" + _AUDIENCE_WHERE + """
 ORDER BY m.id
"""

LAST_AS_OF = "SELECT as_of FROM insight_refreshes WHERE program_id = $1 ORDER BY id DESC LIMIT 1"
