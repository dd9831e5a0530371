-- 0005 — what operators and tenants see: each logged completion's confidence and the
-- review queue of the unsure ones, who owns an adapter, and each version's training curve.
-- See ../shared/DESIGN.md and the README's "What operators see".

-- Confidence of a logged completion: the geometric mean of its chosen tokens'
-- probabilities under the model (before temperature), and the lowest of them.
ALTER TABLE hone.completions
    ADD COLUMN confidence real
        CONSTRAINT "confidence is a probability" CHECK (confidence BETWEEN 0 AND 1),
    ADD COLUMN lowest_token_probability real
        CONSTRAINT "lowest token probability is a probability" CHECK (lowest_token_probability BETWEEN 0 AND 1);
CREATE INDEX completions_adapter_idx ON hone.completions (adapter, created_at);
CREATE INDEX feedback_completion_idx ON hone.feedback (completion_id) WHERE completion_id IS NOT NULL;

-- review_threshold: a completion of this adapter with a lower confidence goes to review.
-- owner_role: the database role whose members (a tenant's applications) see this adapter's
-- review queue; NULL shares it with every feedback role. Operators see every adapter's.
ALTER TABLE hone.adapters
    ADD COLUMN review_threshold real NOT NULL DEFAULT 0.55
        CONSTRAINT "review threshold is between 0 and 1" CHECK (review_threshold BETWEEN 0 AND 1),
    ADD COLUMN owner_role text
        CONSTRAINT "owner role is a role name" CHECK (owner_role ~ '^[A-Za-z_][A-Za-z0-9_$-]{0,62}$');

-- Whether the current role may see `p_adapter`'s review queue. A role that does not exist
-- (dropped since) owns nothing, rather than failing every read of the view.
CREATE FUNCTION hone.may_review(p_owner text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT CASE
        WHEN p_owner IS NULL THEN true
        WHEN pg_has_role(current_user, 'hone_operator', 'MEMBER') THEN true
        WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = p_owner) THEN false
        ELSE pg_has_role(current_user, p_owner, 'MEMBER')
    END
$$;

-- Low-confidence completions of adapters, not yet answered: feedback naming the completion
-- (a rating or a correction) takes it out of the queue and into learning. Base-model
-- completions name no adapter and so have no queue: feedback needs an adapter to teach.
CREATE VIEW hone.review_queue AS
SELECT c.id AS completion_id, c.adapter, c.version, c.created_at, c.confidence, c.lowest_token_probability,
       a.review_threshold AS threshold, c.messages, c.response
FROM hone.completions c
JOIN hone.adapters a ON a.name = c.adapter
WHERE c.confidence < a.review_threshold
  AND NOT EXISTS (SELECT 1 FROM hone.feedback f WHERE f.completion_id = c.id)
  AND hone.may_review(a.owner_role);

-- Each trained version's optimizer steps: loss (nats per target token, before the step),
-- gradient norm (before clipping), learning rate, and, where the learner checked the
-- held-out probes after that step, how many passed of how many.
CREATE TABLE hone.version_steps (
    adapter         text NOT NULL,
    version         integer NOT NULL,
    step            integer NOT NULL CONSTRAINT "step counts from 1" CHECK (step > 0),
    loss            double precision NOT NULL,
    grad_norm       double precision NOT NULL,
    learning_rate   double precision NOT NULL,
    held_out_passed integer,
    held_out_checks integer,
    PRIMARY KEY (adapter, version, step),
    FOREIGN KEY (adapter, version) REFERENCES hone.model_versions (adapter, version),
    CONSTRAINT "held-out passes are counted with their checks" CHECK (
        (held_out_passed IS NULL) = (held_out_checks IS NULL) AND held_out_passed <= held_out_checks)
);

GRANT EXECUTE ON FUNCTION hone.may_review(text) TO hone_feedback, hone_operator;
GRANT SELECT ON hone.review_queue TO hone_feedback, hone_operator;
GRANT SELECT ON hone.version_steps TO hone_operator;
GRANT UPDATE (review_threshold, owner_role) ON hone.adapters TO hone_operator;
GRANT SELECT (name, review_threshold) ON hone.adapters TO hone_feedback;
