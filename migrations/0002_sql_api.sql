-- 0002 — the SQL API that applications call: adapters, completions, feedback, tasks,
-- documents, their status, and the roles' grants. See ../shared/DESIGN.md, "What users
-- and operators do".
--
-- Constraint names are sentences: PostgreSQL quotes the name in its error message, so a
-- rejected INSERT tells the person what to fix.

CREATE TABLE hone.adapters (
    name           text PRIMARY KEY
        CONSTRAINT "adapter name is 1-63 lowercase letters, digits, - or _"
        CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    settings       jsonb NOT NULL DEFAULT '{}'
        CONSTRAINT "adapter settings must be a JSON object" CHECK (jsonb_typeof(settings) = 'object'),
    -- NULL until the first version is published: the base model answers.
    active_version integer,
    paused         boolean NOT NULL DEFAULT false,
    -- A pinned adapter keeps its active version: candidates are recorded, never activated.
    pinned         boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Every candidate the learner trains, accepted or rejected, with its blob and gate metrics.
CREATE TABLE hone.model_versions (
    adapter        text NOT NULL REFERENCES hone.adapters (name),
    version        integer NOT NULL CHECK (version > 0),
    parent_version integer,
    status         text NOT NULL
        CONSTRAINT "version status is accepted or rejected" CHECK (status IN ('accepted', 'rejected')),
    base_model_sha256 text NOT NULL,
    blob           bytea,
    blob_sha256    text,
    metrics        jsonb NOT NULL DEFAULT '{}',
    job_ids        bigint[] NOT NULL DEFAULT '{}',
    reason         text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (adapter, version),
    CONSTRAINT "an accepted version has a blob and its sha256" CHECK (
        status <> 'accepted' OR (blob IS NOT NULL AND blob_sha256 IS NOT NULL))
);

ALTER TABLE hone.adapters ADD CONSTRAINT "active version must exist in hone.model_versions"
    FOREIGN KEY (name, active_version) REFERENCES hone.model_versions (adapter, version);

-- Completions the server answered; feedback refers to them by id. Written asynchronously
-- in batches by the server, so feedback may arrive before its completion row.
CREATE TABLE hone.completions (
    id         text PRIMARY KEY,
    adapter    text,
    version    integer,
    messages   jsonb NOT NULL,
    response   text NOT NULL,
    timings    jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Outcome columns shared by feedback, tasks and documents. Set when the submission's job
-- finishes (trigger below), so they survive the pruning of finished jobs.
--   outcome: trained | dropped | rejected | blocked | completed | failed | cancelled

CREATE TABLE hone.feedback (
    id            bigserial PRIMARY KEY,
    adapter       text
        CONSTRAINT "adapter must exist in hone.adapters" REFERENCES hone.adapters (name),
    completion_id text,
    messages      jsonb,
    prompt        text,
    response      text,
    rating        smallint,
    correction    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    job_id        bigint,
    outcome       text,
    outcome_reason text,
    trained_version integer,
    finalized_at  timestamptz,
    CONSTRAINT "feedback needs an adapter (or a logged completion_id)" CHECK (adapter IS NOT NULL),
    CONSTRAINT "feedback needs a completion_id, a prompt or messages" CHECK (
        completion_id IS NOT NULL OR prompt IS NOT NULL OR messages IS NOT NULL),
    CONSTRAINT "feedback needs a rating or a correction" CHECK (rating IS NOT NULL OR correction IS NOT NULL),
    CONSTRAINT "rating must be -1 (thumbs down) or 1 (thumbs up)" CHECK (rating IN (-1, 1)),
    CONSTRAINT "correction must not be empty" CHECK (length(btrim(correction)) > 0),
    CONSTRAINT "correction must be at most 16384 bytes" CHECK (octet_length(correction) <= 16384),
    CONSTRAINT "prompt must not be empty" CHECK (length(btrim(prompt)) > 0),
    CONSTRAINT "prompt must be at most 16384 bytes" CHECK (octet_length(prompt) <= 16384),
    CONSTRAINT "response must be at most 16384 bytes" CHECK (octet_length(response) <= 16384),
    CONSTRAINT "messages must be a non-empty JSON array" CHECK (
        jsonb_typeof(messages) = 'array' AND jsonb_array_length(messages) > 0),
    CONSTRAINT "messages must be at most 65536 bytes" CHECK (octet_length(messages::text) <= 65536)
);
CREATE INDEX feedback_job_idx ON hone.feedback (job_id);
CREATE INDEX feedback_adapter_idx ON hone.feedback (adapter, created_at);

CREATE TABLE hone.tasks (
    id            bigserial PRIMARY KEY,
    adapter       text NOT NULL
        CONSTRAINT "adapter must exist in hone.adapters" REFERENCES hone.adapters (name),
    prompt        text NOT NULL,
    verifier      jsonb NOT NULL,
    reference     text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    job_id        bigint,
    outcome       text,
    outcome_reason text,
    trained_version integer,
    finalized_at  timestamptz,
    CONSTRAINT "prompt must not be empty" CHECK (length(btrim(prompt)) > 0),
    CONSTRAINT "prompt must be at most 16384 bytes" CHECK (octet_length(prompt) <= 16384),
    CONSTRAINT "reference must be at most 16384 bytes" CHECK (octet_length(reference) <= 16384),
    CONSTRAINT "verifier must be a JSON object with a type" CHECK (
        jsonb_typeof(verifier) = 'object' AND verifier ? 'type'),
    CONSTRAINT "verifier type is unknown" CHECK (
        verifier->>'type' IN ('exact', 'normalized', 'regex', 'contains', 'numeric', 'json_schema', 'choice')),
    CONSTRAINT "verifier must be at most 65536 bytes" CHECK (octet_length(verifier::text) <= 65536)
);
CREATE INDEX tasks_job_idx ON hone.tasks (job_id);

CREATE TABLE hone.documents (
    id            bigserial PRIMARY KEY,
    adapter       text NOT NULL
        CONSTRAINT "adapter must exist in hone.adapters" REFERENCES hone.adapters (name),
    text          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    job_id        bigint,
    outcome       text,
    outcome_reason text,
    trained_version integer,
    finalized_at  timestamptz,
    CONSTRAINT "document text must not be empty" CHECK (length(btrim(text)) > 0),
    CONSTRAINT "document text must be at most 262144 bytes" CHECK (octet_length(text) <= 262144)
);
CREATE INDEX documents_job_idx ON hone.documents (job_id);

-- Feedback that names a logged completion takes its adapter, messages and response from
-- it; then the job is enqueued in the same transaction (a failing CHECK rolls both back).
CREATE FUNCTION hone.feedback_enqueue() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, hone AS $$
DECLARE
    c hone.completions;
BEGIN
    IF NEW.completion_id IS NOT NULL THEN
        SELECT * INTO c FROM hone.completions WHERE id = NEW.completion_id;
        IF FOUND THEN
            -- A base-model answer may teach any adapter; an adapter's answer teaches that one.
            IF NEW.adapter IS NOT NULL AND c.adapter IS NOT NULL AND c.adapter <> NEW.adapter THEN
                RAISE EXCEPTION 'completion % was answered by adapter "%", not "%"',
                    NEW.completion_id, coalesce(c.adapter, '(base model)'), NEW.adapter
                    USING ERRCODE = 'check_violation';
            END IF;
            NEW.adapter := coalesce(NEW.adapter, c.adapter);
            NEW.messages := coalesce(NEW.messages, c.messages);
            NEW.response := coalesce(NEW.response, c.response);
        END IF;
    END IF;
    NEW.job_id := hone.enqueue('feedback', NEW.adapter, jsonb_strip_nulls(jsonb_build_object(
        'feedback_id', NEW.id, 'adapter', NEW.adapter, 'completion_id', NEW.completion_id,
        'messages', NEW.messages, 'prompt', NEW.prompt, 'response', NEW.response,
        'rating', NEW.rating, 'correction', NEW.correction)),
        'feedback:' || NEW.id);
    NEW.outcome := NULL;
    NEW.outcome_reason := NULL;
    NEW.trained_version := NULL;
    NEW.finalized_at := NULL;
    RETURN NEW;
END
$$;
CREATE TRIGGER feedback_enqueue BEFORE INSERT ON hone.feedback
    FOR EACH ROW EXECUTE FUNCTION hone.feedback_enqueue();

-- Submit a prompt with an external verifier (and optionally a reference answer).
CREATE FUNCTION hone.submit_task(p_adapter text, p_prompt text, p_verifier jsonb, p_reference text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, hone AS $$
DECLARE
    new_id bigint := nextval('hone.tasks_id_seq');
    job bigint;
BEGIN
    IF jsonb_typeof(p_verifier) IS DISTINCT FROM 'object'
       OR p_verifier->>'type' IS NULL
       OR p_verifier->>'type' NOT IN ('exact', 'normalized', 'regex', 'contains', 'numeric', 'json_schema', 'choice') THEN
        RAISE EXCEPTION 'unknown verifier type %: use exact, normalized, regex, contains, numeric, json_schema or choice',
            coalesce(p_verifier->>'type', '(none)')
            USING ERRCODE = 'check_violation',
                  HINT = 'e.g. {"type": "exact", "answer": "Paris"}; jobs/task/schema.json has every shape';
    END IF;
    job := hone.enqueue('task', p_adapter, jsonb_strip_nulls(jsonb_build_object(
        'task_id', new_id, 'adapter', p_adapter, 'prompt', p_prompt,
        'verifier', p_verifier, 'reference', p_reference)), 'task:' || new_id);
    INSERT INTO hone.tasks (id, adapter, prompt, verifier, reference, job_id)
    VALUES (new_id, p_adapter, p_prompt, p_verifier, p_reference, job);
    RETURN new_id;
END
$$;

-- Submit new text to learn from (question-answer pairs and statements are extracted).
CREATE FUNCTION hone.add_document(p_adapter text, p_text text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, hone AS $$
DECLARE
    new_id bigint := nextval('hone.documents_id_seq');
    job bigint;
BEGIN
    job := hone.enqueue('document', p_adapter, jsonb_build_object(
        'document_id', new_id, 'adapter', p_adapter, 'text', p_text), 'document:' || new_id);
    INSERT INTO hone.documents (id, adapter, text, job_id) VALUES (new_id, p_adapter, p_text, job);
    RETURN new_id;
END
$$;

-- When a submission's job finishes, its outcome is copied onto the submission, so the
-- answer to "what became of my feedback?" outlives the job row.
CREATE FUNCTION hone.record_outcome() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, hone AS $$
DECLARE
    o text;
    why text;
    v integer;
BEGIN
    IF NEW.state = 'completed' THEN
        o := coalesce(NEW.result->>'outcome', 'completed');
        why := NEW.result->>'reason';
        v := (NEW.result->>'version')::integer;
    ELSIF NEW.state = 'discarded' THEN
        o := 'failed';
        why := NEW.errors[array_upper(NEW.errors, 1)]->>'error';
    ELSE
        o := 'cancelled';
        why := coalesce(NEW.errors[array_upper(NEW.errors, 1)]->>'error', 'cancelled');
    END IF;
    IF NEW.kind = 'feedback' THEN
        UPDATE hone.feedback SET outcome = o, outcome_reason = why, trained_version = v, finalized_at = NEW.finalized_at
        WHERE job_id = NEW.id;
    ELSIF NEW.kind = 'task' THEN
        UPDATE hone.tasks SET outcome = o, outcome_reason = why, trained_version = v, finalized_at = NEW.finalized_at
        WHERE job_id = NEW.id;
    ELSIF NEW.kind = 'document' THEN
        UPDATE hone.documents SET outcome = o, outcome_reason = why, trained_version = v, finalized_at = NEW.finalized_at
        WHERE job_id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_record_outcome AFTER UPDATE OF state ON hone.jobs
    FOR EACH ROW WHEN (NEW.state IN ('completed', 'cancelled', 'discarded')
                       AND NEW.kind IN ('feedback', 'task', 'document'))
    EXECUTE FUNCTION hone.record_outcome();

-- Each submission's status: from its outcome once finished, else from its job.
--   queued | running | retrying | trained | dropped | rejected | blocked | completed | failed | cancelled
CREATE VIEW hone.submission_status AS
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
       s.finalized_at
FROM submissions s LEFT JOIN hone.jobs j ON j.id = s.job_id;

-- Queue depth by adapter, kind and state, for dashboards and `honectl status`.
CREATE VIEW hone.queue_depth AS
SELECT adapter, kind, state, count(*) AS jobs,
       min(scheduled_at) FILTER (WHERE state IN ('available', 'scheduled', 'retryable')) AS oldest_due
FROM hone.jobs
WHERE state NOT IN ('completed', 'cancelled', 'discarded')
GROUP BY adapter, kind, state;

-- hone_feedback: submit, and read what became of submissions; nothing else.
GRANT SELECT (name, active_version, paused) ON hone.adapters TO hone_feedback;
GRANT INSERT (adapter, completion_id, messages, prompt, response, rating, correction)
    ON hone.feedback TO hone_feedback;
GRANT USAGE ON SEQUENCE hone.feedback_id_seq TO hone_feedback;
-- So that INSERT … RETURNING id works; the content of others' feedback stays unreadable.
GRANT SELECT (id) ON hone.feedback TO hone_feedback;
GRANT EXECUTE ON FUNCTION hone.submit_task(text, text, jsonb, text) TO hone_feedback, hone_operator;
GRANT EXECUTE ON FUNCTION hone.add_document(text, text) TO hone_feedback, hone_operator;
GRANT SELECT ON hone.submission_status TO hone_feedback, hone_operator;

-- hone_operator: manage adapters, versions and jobs.
GRANT SELECT, INSERT, UPDATE ON hone.adapters TO hone_operator;
GRANT SELECT, UPDATE (status, reason) ON hone.model_versions TO hone_operator;
GRANT SELECT ON hone.completions, hone.feedback, hone.tasks, hone.documents, hone.queue_depth TO hone_operator;
GRANT INSERT ON hone.feedback TO hone_operator;
GRANT USAGE ON SEQUENCE hone.feedback_id_seq TO hone_operator;
