-- The base model's distilled targets for the learner's anchor and locality sets. Every
-- learner needs them before its first update, and making them is ~230 sequences of forward
-- passes (20–40 s on two cores), so the first learner stores them and every later start,
-- on any replica, reads them back. `inputs_sha256` names exactly what was distilled (the
-- sequences' tokens and loss masks), so a change of prompts or answers makes new ones.
CREATE TABLE hone.reference_targets (
    base_model_sha256 text NOT NULL CHECK (base_model_sha256 ~ '^[0-9a-f]{64}$'),
    inputs_sha256     text NOT NULL CHECK (inputs_sha256 ~ '^[0-9a-f]{64}$'),
    targets           bytea NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (base_model_sha256, inputs_sha256)
);
