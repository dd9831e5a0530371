-- 0006 — tenants. HTTP: API keys, stored as SHA-256 digests, each scoped to adapters (or
-- an operator's key: every adapter, /status and /metrics). SQL: an application's login
-- role submits to and sees only its own adapters (adapters.owner_role, 0005) and the
-- shared ones (no owner), whether it logs in as its own role or a pool's login role sets
-- it with SET ROLE. See the README's "Tenants".

CREATE TABLE hone.api_keys (
    id          bigserial PRIMARY KEY,
    -- The key's first characters, to recognise it in lists; the key itself is never stored.
    prefix      text NOT NULL,
    key_sha256  text NOT NULL UNIQUE
        CONSTRAINT "key_sha256 is 64 lowercase hex digits" CHECK (key_sha256 ~ '^[0-9a-f]{64}$'),
    adapters    text[] NOT NULL DEFAULT '{}',
    operator    boolean NOT NULL DEFAULT false,
    note        text,
    created_by  text NOT NULL DEFAULT session_user,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CONSTRAINT "a key names its adapters or is an operator's" CHECK (operator OR cardinality(adapters) > 0)
);

-- Every replica reloads its keys on this notification (and polls, in case one was missed).
CREATE FUNCTION hone.api_keys_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hone_keys', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER api_keys_notify AFTER INSERT OR UPDATE OR DELETE ON hone.api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION hone.api_keys_notify();

-- The owner role of an adapter (NULL: shared, or no such adapter), readable whatever the
-- caller may see, so that a check can tell "not yours" from "shared".
CREATE FUNCTION hone.adapter_owner(p_adapter text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, hone AS $$
    SELECT owner_role FROM hone.adapters WHERE name = p_adapter
$$;

-- Whether `p_role` may submit to and read `p_adapter`: a shared adapter, one its role owns,
-- or any for operators. hone.may_review (0005) is the same rule for the current role.
CREATE FUNCTION hone.role_may_use(p_adapter text, p_role name) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, hone AS $$
    SELECT CASE
        WHEN hone.adapter_owner(p_adapter) IS NULL THEN true
        WHEN pg_has_role(p_role, 'hone_operator', 'MEMBER') THEN true
        WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = hone.adapter_owner(p_adapter)) THEN false
        ELSE pg_has_role(p_role, hone.adapter_owner(p_adapter), 'MEMBER')
    END
$$;

-- The role a call acts as, also inside a function that runs as its owner (where
-- current_user is the owner): the role set with SET ROLE, else the login role.
CREATE FUNCTION hone.caller() RETURNS name
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT CASE WHEN current_setting('role') = 'none' THEN session_user ELSE current_setting('role')::name END
$$;

-- Refuses a submission to an adapter that does not exist or that the caller may not use,
-- with one message for both: a tenant cannot probe which names another tenant uses.
CREATE FUNCTION hone.require_tenant(p_adapter text) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, hone AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM hone.adapters WHERE name = p_adapter)
       OR NOT hone.role_may_use(p_adapter, hone.caller()) THEN
        RAISE EXCEPTION 'adapter "%" does not exist or is not yours', p_adapter
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

-- Feedback: checked after its completion filled in the adapter, before its job is enqueued.
CREATE OR REPLACE FUNCTION hone.feedback_enqueue() RETURNS trigger
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
    IF NEW.adapter IS NOT NULL THEN
        PERFORM hone.require_tenant(NEW.adapter);
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

CREATE OR REPLACE FUNCTION hone.submit_task(p_adapter text, p_prompt text, p_verifier jsonb, p_reference text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, hone AS $$
DECLARE
    new_id bigint := nextval('hone.tasks_id_seq');
    job bigint;
BEGIN
    PERFORM hone.require_tenant(p_adapter);
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

CREATE OR REPLACE FUNCTION hone.add_document(p_adapter text, p_text text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, hone AS $$
DECLARE
    new_id bigint := nextval('hone.documents_id_seq');
    job bigint;
BEGIN
    PERFORM hone.require_tenant(p_adapter);
    job := hone.enqueue('document', p_adapter, jsonb_build_object(
        'document_id', new_id, 'adapter', p_adapter, 'text', p_text), 'document:' || new_id);
    INSERT INTO hone.documents (id, adapter, text, job_id) VALUES (new_id, p_adapter, p_text, job);
    RETURN new_id;
END
$$;

-- Reading: row-level security on what applications may read directly, filters in the
-- views (which read as their owner).
ALTER TABLE hone.adapters ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_reads_own ON hone.adapters FOR SELECT TO hone_feedback USING (hone.may_review(owner_role));
CREATE POLICY operator_all ON hone.adapters TO hone_operator USING (true) WITH CHECK (true);
ALTER TABLE hone.feedback ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_reads_own ON hone.feedback FOR SELECT TO hone_feedback USING (hone.role_may_use(adapter, current_user));
CREATE POLICY tenant_submits_own ON hone.feedback FOR INSERT TO hone_feedback WITH CHECK (hone.role_may_use(adapter, current_user));
CREATE POLICY operator_all ON hone.feedback TO hone_operator USING (true) WITH CHECK (true);

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
       j.result->>'learned' AS learned,
       j.result->'held_out' AS held_out
FROM submissions s LEFT JOIN hone.jobs j ON j.id = s.job_id
WHERE hone.role_may_use(s.adapter, current_user);

GRANT SELECT (owner_role) ON hone.adapters TO hone_feedback;
GRANT EXECUTE ON FUNCTION hone.adapter_owner(text), hone.role_may_use(text, name), hone.require_tenant(text), hone.caller()
    TO hone_feedback, hone_operator;
GRANT SELECT, INSERT, UPDATE (revoked_at, note) ON hone.api_keys TO hone_operator;
GRANT USAGE ON SEQUENCE hone.api_keys_id_seq TO hone_operator;
