-- 0004 — each submission says whether it was learned, not only which version it was
-- trained into: its own held-out checks on the parent and on the candidate, as the
-- learner records them in the job's result ({"learned": …, "held_out": {checks,
-- passed_before, passed_after}}). CREATE OR REPLACE VIEW may only add columns at the end;
-- the existing ones stay as 0002 defined them. Jobs are pruned after their retention, and
-- these two columns with them.
CREATE OR REPLACE VIEW hone.submission_status AS
WITH submissions AS (
    SELECT 'feedback' AS kind, id, adapter, created_at, job_id, outcome, outcome_reason, trained_version, finalized_at
    FROM hone.feedback
    UNION ALL
    SELECT 'task', id, adapter, created_at, job_id, outcome, outcome_reason, trained_version, finalized_at
    FROM hone.tasks
    UNION ALL
    SELECT 'document', id, adapter, created_at, job_id, outcome, outcome_reason, trained_version, finalized_at
    FROM hone.documents
)
SELECT s.kind, s.id, s.adapter, s.created_at, s.job_id,
       coalesce(s.outcome, CASE j.state
           WHEN 'available' THEN 'queued' WHEN 'scheduled' THEN 'queued'
           WHEN 'running' THEN 'running' WHEN 'retryable' THEN 'retrying'
           ELSE j.state::text END, 'unknown') AS status,
       coalesce(s.outcome_reason, j.errors[array_upper(j.errors, 1)]->>'error') AS reason,
       s.trained_version AS version,
       j.attempt,
       s.finalized_at,
       -- learned | trained, not yet answered on rewordings | trained (no held-out checks)
       j.result->>'learned' AS learned,
       j.result->'held_out' AS held_out
FROM submissions s LEFT JOIN hone.jobs j ON j.id = s.job_id;
