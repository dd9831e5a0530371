-- 0001 — the job queue (River-style). See ../shared/DESIGN.md, "The queue".
--
-- Operational notes: runs in one transaction under the migration advisory lock; every
-- statement here takes locks only on objects it creates, so it is safe on a live database.

-- No function in schema hone is callable by PUBLIC: several are SECURITY DEFINER and must
-- be reachable only through the grants below. The migrator revokes PUBLIC's EXECUTE after
-- every migration, so later files need not repeat it.
REVOKE ALL ON SCHEMA hone FROM PUBLIC;

-- The roles of DESIGN.md. They are cluster-wide, so creation tolerates a concurrent
-- migration of another database creating them first.
DO $$
BEGIN
    BEGIN
        CREATE ROLE hone_feedback NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    BEGIN
        CREATE ROLE hone_operator NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
END
$$;

CREATE TYPE hone.job_state AS ENUM (
    'available',  -- may be claimed now
    'scheduled',  -- waits for scheduled_at; the leader stages it to available
    'running',    -- claimed; its lease must be renewed by heartbeats
    'retryable',  -- failed an attempt; the leader stages it when its backoff is over
    'completed',  -- finished; result says what came of it
    'cancelled',  -- stopped by an operator or an application
    'discarded'   -- given up: invalid payload or max_attempts reached; errors say why
);

-- Defaults per job kind. Filled from the catalogue in jobs/ by every migrate run, so the
-- catalogue is the one source of these numbers.
CREATE TABLE hone.job_kinds (
    kind          text PRIMARY KEY,
    max_attempts  integer NOT NULL CHECK (max_attempts BETWEEN 1 AND 100),
    priority      smallint NOT NULL CHECK (priority BETWEEN 1 AND 4),
    lease_seconds double precision NOT NULL CHECK (lease_seconds > 0),
    batch_size    integer NOT NULL CHECK (batch_size BETWEEN 1 AND 10000),
    schema        jsonb NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE hone.jobs (
    id               bigserial PRIMARY KEY,
    kind             text NOT NULL REFERENCES hone.job_kinds (kind),
    -- The adapter the job teaches; learning for one adapter runs on one replica at a time.
    adapter          text,
    state            hone.job_state NOT NULL DEFAULT 'available',
    -- 1 is most urgent, 4 least (River's convention).
    priority         smallint NOT NULL DEFAULT 2 CHECK (priority BETWEEN 1 AND 4),
    args             jsonb NOT NULL,
    attempt          integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL CHECK (max_attempts BETWEEN 1 AND 100),
    -- One JSON object per failed attempt: {attempt, at, error}.
    errors           jsonb[] NOT NULL DEFAULT '{}',
    result           jsonb,
    unique_key       text,
    attempted_by     text[] NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    scheduled_at     timestamptz NOT NULL DEFAULT now(),
    attempted_at     timestamptz,
    heartbeat_at     timestamptz,
    lease_expires_at timestamptz,
    finalized_at     timestamptz,
    CONSTRAINT "a running job has a lease" CHECK (state <> 'running' OR lease_expires_at IS NOT NULL),
    CONSTRAINT "a finished job has finalized_at" CHECK (
        (state IN ('completed', 'cancelled', 'discarded')) = (finalized_at IS NOT NULL))
);

-- Claim order: priority, then due time, then age. Partial, so it holds only claimable rows.
CREATE INDEX jobs_claim_idx ON hone.jobs (priority, scheduled_at, id) WHERE state = 'available';
CREATE INDEX jobs_claim_adapter_idx ON hone.jobs (adapter, priority, scheduled_at, id) WHERE state = 'available';
CREATE INDEX jobs_lease_idx ON hone.jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_due_idx ON hone.jobs (scheduled_at) WHERE state IN ('scheduled', 'retryable');
CREATE INDEX jobs_finalized_idx ON hone.jobs (finalized_at) WHERE finalized_at IS NOT NULL;
-- A unique key holds while the job is live or completed; cancelling or discarding a job
-- frees its key so the same work can be submitted again.
CREATE UNIQUE INDEX jobs_unique_key_idx ON hone.jobs (kind, unique_key)
    WHERE unique_key IS NOT NULL AND state NOT IN ('cancelled', 'discarded');

-- Backoff for attempt n: base·2^(n-1), capped, with ±25% jitter so that jobs that failed
-- together do not come back together. The one formula for worker failures and rescues.
CREATE FUNCTION hone.retry_delay(attempt integer, base_seconds double precision, cap_seconds double precision)
RETURNS interval LANGUAGE sql VOLATILE AS $$
    SELECT make_interval(secs => least(cap_seconds,
        base_seconds * power(2, greatest(attempt - 1, 0)) * (0.75 + random() * 0.5)))
$$;

-- The error entry appended to errors for a failed attempt.
CREATE FUNCTION hone.job_error(attempt integer, message text)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('attempt', attempt, 'at', now(), 'error', message)
$$;

-- Enqueue: the one way to add a job, used by the SQL API triggers and by the daemon.
-- Defaults come from hone.job_kinds. With a unique_key that is already taken, returns
-- the existing job's id instead of adding a second one.
CREATE FUNCTION hone.enqueue(
    p_kind text, p_adapter text, p_args jsonb,
    p_unique_key text DEFAULT NULL, p_priority integer DEFAULT NULL,
    p_scheduled_at timestamptz DEFAULT NULL, p_max_attempts integer DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, hone AS $$
DECLARE
    k hone.job_kinds;
    new_id bigint;
    due timestamptz := coalesce(p_scheduled_at, now());
BEGIN
    SELECT * INTO k FROM hone.job_kinds WHERE kind = p_kind;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown job kind "%"', p_kind
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'job kinds are listed in hone.job_kinds (from the jobs/ catalogue)';
    END IF;
    INSERT INTO hone.jobs (kind, adapter, args, unique_key, priority, scheduled_at, max_attempts, state)
    VALUES (p_kind, p_adapter, p_args, p_unique_key, coalesce(p_priority, k.priority), due,
            coalesce(p_max_attempts, k.max_attempts),
            CASE WHEN due > now() THEN 'scheduled' ELSE 'available' END::hone.job_state)
    ON CONFLICT (kind, unique_key) WHERE unique_key IS NOT NULL AND state NOT IN ('cancelled', 'discarded')
    DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NULL THEN
        -- The conflicting row is visible: ON CONFLICT waited for its inserter to commit.
        SELECT id INTO new_id FROM hone.jobs
        WHERE kind = p_kind AND unique_key = p_unique_key AND state NOT IN ('cancelled', 'discarded');
    END IF;
    RETURN new_id;
END
$$;

-- NOTIFY is a hint, sent inside the inserting transaction so a worker never wakes before
-- the job is visible. Identical payloads in one transaction are folded into one.
CREATE FUNCTION hone.jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hone_jobs', coalesce(NEW.adapter, ''));
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE OF state ON hone.jobs
    FOR EACH ROW WHEN (NEW.state = 'available') EXECUTE FUNCTION hone.jobs_notify();

GRANT USAGE ON SCHEMA hone TO hone_feedback, hone_operator;
GRANT SELECT, UPDATE, DELETE ON hone.jobs TO hone_operator;
GRANT SELECT ON hone.job_kinds TO hone_operator;
GRANT EXECUTE ON FUNCTION hone.enqueue(text, text, jsonb, text, integer, timestamptz, integer) TO hone_operator;
