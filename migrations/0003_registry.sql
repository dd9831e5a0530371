-- 0003 — the version registry's operations: which version each adapter serves, every
-- change to that with who, when and why, replicas' heartbeats, and the notification every
-- replica's version watcher listens for. See ../shared/DESIGN.md, "Atomic swap" and
-- "Scale beyond one machine".

-- One row per change of an adapter's serving state, written in the transaction that makes
-- the change. `actor` is the database role (or the replica, for the learner).
CREATE TABLE hone.adapter_events (
    id           bigserial PRIMARY KEY,
    adapter      text NOT NULL REFERENCES hone.adapters (name),
    action       text NOT NULL
        CONSTRAINT "event action is create, publish, reject, rollback, activate, pin, unpin, pause or resume"
        CHECK (action IN ('create', 'publish', 'reject', 'rollback', 'activate', 'pin', 'unpin', 'pause', 'resume')),
    from_version integer,
    to_version   integer,
    actor        text NOT NULL DEFAULT current_user,
    reason       text,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX adapter_events_adapter_idx ON hone.adapter_events (adapter, at);

-- Learners record when a candidate was trained and from how many examples.
ALTER TABLE hone.model_versions ADD COLUMN examples integer NOT NULL DEFAULT 0;

-- The verified examples each accepted version was trained on: the adapter's replay buffer
-- (later updates replay a sample of them) and the answer to "what exactly was learned".
CREATE TABLE hone.training_examples (
    id         bigserial PRIMARY KEY,
    adapter    text NOT NULL REFERENCES hone.adapters (name),
    version    integer NOT NULL,
    job_id     bigint,
    messages   jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (adapter, version) REFERENCES hone.model_versions (adapter, version)
);
CREATE INDEX training_examples_adapter_idx ON hone.training_examples (adapter, version);

-- The base model's own answers to the learner's anchor prompts, per base model: made once
-- by the first learner and shared, so every replica's gate judges the same text.
CREATE TABLE hone.anchor_answers (
    base_model_sha256 text NOT NULL,
    prompt            text NOT NULL,
    answer            text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (base_model_sha256, prompt)
);

-- Every running honed: what it serves, refreshed by its heartbeat.
CREATE TABLE hone.replicas (
    id           text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    base_model_sha256 text,
    served       jsonb NOT NULL DEFAULT '{}',
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- Any change of what an adapter serves (or may serve) wakes every replica's watcher.
-- Sent inside the changing transaction, so the watcher never reads the old row.
CREATE FUNCTION hone.adapters_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hone_versions', NEW.name);
    RETURN NULL;
END
$$;
CREATE TRIGGER adapters_notify AFTER INSERT OR UPDATE OF active_version, paused, pinned ON hone.adapters
    FOR EACH ROW EXECUTE FUNCTION hone.adapters_notify();

-- Makes `p_version` the adapter's active version (an operator's rollback or activation).
-- Refuses, with the reason and no change, a version that does not exist, was rejected by
-- the gate, or was trained on another base model than the one now active.
CREATE FUNCTION hone.activate_version(p_adapter text, p_version integer, p_action text, p_reason text DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, hone AS $$
DECLARE
    a hone.adapters;
    target hone.model_versions;
    current_base text;
BEGIN
    IF p_action NOT IN ('rollback', 'activate') THEN
        RAISE EXCEPTION 'action must be rollback or activate, not %', p_action USING ERRCODE = 'check_violation';
    END IF;
    SELECT * INTO a FROM hone.adapters WHERE name = p_adapter FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'adapter "%" does not exist', p_adapter USING ERRCODE = 'no_data_found';
    END IF;
    SELECT * INTO target FROM hone.model_versions WHERE adapter = p_adapter AND version = p_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'adapter "%" has no version %', p_adapter, p_version USING ERRCODE = 'no_data_found';
    END IF;
    IF target.status <> 'accepted' THEN
        RAISE EXCEPTION 'version % of "%" was rejected by the gate (%); it cannot serve',
            p_version, p_adapter, coalesce(target.reason, 'no reason recorded') USING ERRCODE = 'check_violation';
    END IF;
    SELECT base_model_sha256 INTO current_base FROM hone.model_versions
    WHERE adapter = p_adapter AND version = a.active_version;
    IF current_base IS NOT NULL AND current_base <> target.base_model_sha256 THEN
        RAISE EXCEPTION 'version % of "%" was trained on base model %…, but the active version % runs on %…',
            p_version, p_adapter, left(target.base_model_sha256, 12), a.active_version, left(current_base, 12)
            USING ERRCODE = 'check_violation';
    END IF;
    IF a.active_version IS NOT DISTINCT FROM p_version THEN
        RAISE EXCEPTION 'version % of "%" is already active', p_version, p_adapter USING ERRCODE = 'check_violation';
    END IF;
    UPDATE hone.adapters SET active_version = p_version, updated_at = now() WHERE name = p_adapter;
    INSERT INTO hone.adapter_events (adapter, action, from_version, to_version, actor, reason)
    VALUES (p_adapter, p_action, a.active_version, p_version, session_user, p_reason);
    RETURN p_version;
END
$$;

-- Sets pinned or paused, with its audit row; a no-op change is refused so that scripts
-- notice they acted on the wrong adapter.
CREATE FUNCTION hone.set_adapter_flag(p_adapter text, p_action text, p_reason text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, hone AS $$
DECLARE
    a hone.adapters;
BEGIN
    SELECT * INTO a FROM hone.adapters WHERE name = p_adapter FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'adapter "%" does not exist', p_adapter USING ERRCODE = 'no_data_found';
    END IF;
    IF (p_action = 'pin' AND a.pinned) OR (p_action = 'unpin' AND NOT a.pinned)
       OR (p_action = 'pause' AND a.paused) OR (p_action = 'resume' AND NOT a.paused) THEN
        RAISE EXCEPTION 'adapter "%" is already %', p_adapter,
            CASE p_action WHEN 'pin' THEN 'pinned' WHEN 'unpin' THEN 'unpinned'
                          WHEN 'pause' THEN 'paused' ELSE 'running (not paused)' END
            USING ERRCODE = 'check_violation';
    END IF;
    CASE p_action
        WHEN 'pin' THEN UPDATE hone.adapters SET pinned = true, updated_at = now() WHERE name = p_adapter;
        WHEN 'unpin' THEN UPDATE hone.adapters SET pinned = false, updated_at = now() WHERE name = p_adapter;
        WHEN 'pause' THEN UPDATE hone.adapters SET paused = true, updated_at = now() WHERE name = p_adapter;
        WHEN 'resume' THEN UPDATE hone.adapters SET paused = false, updated_at = now() WHERE name = p_adapter;
        ELSE RAISE EXCEPTION 'action must be pin, unpin, pause or resume, not %', p_action
            USING ERRCODE = 'check_violation';
    END CASE;
    INSERT INTO hone.adapter_events (adapter, action, from_version, to_version, actor, reason)
    VALUES (p_adapter, p_action, a.active_version, a.active_version, session_user, p_reason);
END
$$;

-- Creates an adapter with its settings (an object; the learner's defaults fill the rest)
-- and its audit row. No version yet: the base model answers for it until the first publish.
CREATE FUNCTION hone.create_adapter(p_name text, p_settings jsonb DEFAULT '{}', p_reason text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, hone AS $$
BEGIN
    INSERT INTO hone.adapters (name, settings) VALUES (p_name, coalesce(p_settings, '{}'));
    INSERT INTO hone.adapter_events (adapter, action, actor, reason) VALUES (p_name, 'create', session_user, p_reason);
END
$$;

-- Adapter status for dashboards and `honectl status`.
CREATE VIEW hone.adapter_status AS
SELECT a.name AS adapter, a.active_version, a.pinned, a.paused,
       (SELECT count(*) FROM hone.jobs j WHERE j.adapter = a.name
          AND j.state IN ('available', 'scheduled', 'running', 'retryable')) AS pending_jobs,
       last.version AS last_version, last.status AS last_status, last.reason AS last_reason,
       last.created_at AS last_update
FROM hone.adapters a
LEFT JOIN LATERAL (
    SELECT version, status, reason, created_at FROM hone.model_versions v
    WHERE v.adapter = a.name ORDER BY version DESC LIMIT 1
) last ON true;

GRANT SELECT ON hone.adapter_events, hone.replicas, hone.adapter_status, hone.training_examples TO hone_operator;
GRANT EXECUTE ON FUNCTION hone.activate_version(text, integer, text, text) TO hone_operator;
GRANT EXECUTE ON FUNCTION hone.set_adapter_flag(text, text, text) TO hone_operator;
GRANT EXECUTE ON FUNCTION hone.create_adapter(text, jsonb, text) TO hone_operator;
