-- One row per uploaded object version: the importer claims it here, so a redelivered or
-- concurrent S3 event does the work once, and the admin's status page reads the outcome here.

CREATE TABLE IF NOT EXISTS imports (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  kind TEXT NOT NULL CHECK (kind IN ('students', 'stalls')),
  bucket TEXT NOT NULL,
  object_key TEXT NOT NULL,
  -- S3 version id when the bucket is versioned, else the ETag; NULL until the upload arrives.
  object_version TEXT,
  status TEXT NOT NULL CHECK (status IN
    ('awaiting_upload', 'processing', 'succeeded', 'partially_succeeded', 'failed')),
  rows_total INTEGER NOT NULL DEFAULT 0,
  rows_inserted INTEGER NOT NULL DEFAULT 0,
  rows_updated INTEGER NOT NULL DEFAULT 0,
  rows_unchanged INTEGER NOT NULL DEFAULT 0,
  rows_rejected INTEGER NOT NULL DEFAULT 0,
  -- Why the file failed, or the first rejected rows, for the status page.
  reasons JSONB NOT NULL DEFAULT '[]'::jsonb,
  report_key TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  lease_expires_at TIMESTAMPTZ,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  started_at TIMESTAMPTZ,
  finished_at TIMESTAMPTZ,
  UNIQUE (bucket, object_key, object_version)
);

CREATE INDEX IF NOT EXISTS idx_imports_created ON imports(created_at DESC);
