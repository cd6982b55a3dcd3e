-- Imports are claimed by a row lock that the import's own transaction holds, so a run that dies
-- releases its claim with its connection and a retry takes over at once; `attempt` fences a run
-- that lost its claim. The options an upload was made with, and what a finished import still
-- owes (its report files, its QR images), so a redelivered event can complete them.

ALTER TABLE imports ADD COLUMN IF NOT EXISTS blank_cells TEXT NOT NULL DEFAULT 'keep'
  CHECK (blank_cells IN ('keep', 'clear'));
ALTER TABLE imports ADD COLUMN IF NOT EXISTS event_id UUID;
-- The whole report, written in the import's transaction; the files in S3 are made from it.
ALTER TABLE imports ADD COLUMN IF NOT EXISTS report JSONB;
ALTER TABLE imports ADD COLUMN IF NOT EXISTS rejected_key TEXT;
ALTER TABLE imports ADD COLUMN IF NOT EXISTS report_written_at TIMESTAMPTZ;
-- Rows whose QR images are still to be cached; NULL once they are.
ALTER TABLE imports ADD COLUMN IF NOT EXISTS qr_pending UUID[];
