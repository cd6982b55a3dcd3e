-- Why the last run of an import failed on the machinery (Postgres, S3), not on the file: the
-- import stays `processing` while Lambda retries it or an operator replays it, and the admin's
-- status page shows this meanwhile. Cleared when the import finishes.

ALTER TABLE imports ADD COLUMN IF NOT EXISTS last_error TEXT;
