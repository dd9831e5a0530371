-- Attempts that ended in an error or an expired lease, as opposed to attempts given back
-- (a replica shutting down, the adapter's active version changed under the update). A job
-- with a failure may be the one that crashes its worker, so it is retried alone; a job only
-- given back is batched with fresh ones again (`JobQueue.claim`'s retriesAlone).
ALTER TABLE hone.jobs ADD COLUMN failures integer NOT NULL DEFAULT 0 CHECK (failures >= 0);
UPDATE hone.jobs SET failures = cardinality(errors) WHERE state <> 'completed';
