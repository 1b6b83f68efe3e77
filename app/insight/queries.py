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

PROGRAMS = "SELECT id, settings FROM programs WHERE $1::uuid IS NULL OR id = $1 ORDER BY created_at, id"

MEMBERS_OF = "SELECT count(*) FROM members WHERE program_id = $1 AND created_at <= $2"

# A member's insight: the member (404 when not of the programme), its row of the last refresh (if any), and its
# balance row.
MEMBER = """
SELECT m.id AS member_pk, m.external_id, r.as_of, r.window_days, i.first_purchase_on, i.last_purchase_on,
       i.recency_days, i.frequency, i.monetary, i.r_score, i.f_score, i.m_score, i.segment, i.stage,
       coalesce(b.available, 0) AS available, coalesce(b.pending, 0) AS pending, coalesce(b.held, 0) AS held,
       coalesce(b.lifetime_earned, 0) AS lifetime_earned, coalesce(b.lifetime_redeemed, 0) AS lifetime_redeemed
  FROM ledger.member($1, $2) m
  LEFT JOIN member_insights i ON i.member_id = m.id
  LEFT JOIN insight_refreshes r ON r.id = i.refresh_id
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
SELECT i.member_id AS member_pk, m.external_id, i.recency_days, i.frequency, round(i.monetary, $5) AS monetary,
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
SELECT m.external_id AS member_id, m.name, m.email, m.phone, i.segment, i.stage, i.recency_days, i.frequency,
       round(i.monetary, $3) AS monetary, i.r_score, i.f_score, i.m_score, i.last_purchase_on
  FROM member_insights i JOIN members m ON m.id = i.member_id
 WHERE i.program_id = $1 AND i.segment = $2
 ORDER BY i.member_id
"""

# Cursors: opaque (ledger.public_id of the member row), never a row id in the clear.
CURSOR_OUT = "SELECT ledger.public_id('mbr', $1::bigint)"
CURSOR_IN = "SELECT ledger.row_id('mbr', $1)"
