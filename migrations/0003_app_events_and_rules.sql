-- The rest of the app's schema that imports meet: its events (005, 012, 014), who attends them
-- (005, 016), stalls' event (005), the counters its scan and feedback paths add to (001, 005),
-- and the checks its maintenance script make-dob-pincode-mandatory.js adds. Every statement is
-- a no-op on the app's real database, where all of this already exists.

CREATE TABLE IF NOT EXISTS events (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  event_name VARCHAR(200) NOT NULL,
  event_code VARCHAR(50) UNIQUE NOT NULL,
  description TEXT,
  event_type VARCHAR(20) NOT NULL DEFAULT 'FREE' CHECK (event_type IN ('FREE', 'PAID')),
  price DECIMAL(10, 2) DEFAULT 0.00,
  venue VARCHAR(200),
  start_date TIMESTAMP NOT NULL,
  end_date TIMESTAMP NOT NULL,
  registration_start_date TIMESTAMP NOT NULL,
  registration_end_date TIMESTAMP NOT NULL,
  max_capacity INTEGER,
  current_registrations INTEGER DEFAULT 0,
  status VARCHAR(20) DEFAULT 'DRAFT' CHECK (status IN
    ('DRAFT', 'PENDING_APPROVAL', 'APPROVED', 'ACTIVE', 'COMPLETED', 'CANCELLED', 'ARCHIVED')),
  -- The app's is NOT NULL REFERENCES event_managers(id); no table of ours needs managers.
  created_by_manager_id UUID,
  is_visible BOOLEAN DEFAULT TRUE,
  rankings_published BOOLEAN DEFAULT NULL,
  created_at TIMESTAMP DEFAULT NOW(),
  updated_at TIMESTAMP DEFAULT NOW()
);

CREATE INDEX IF NOT EXISTS idx_events_status ON events(status);

CREATE TABLE IF NOT EXISTS event_registrations (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  event_id UUID NOT NULL REFERENCES events(id) ON DELETE RESTRICT,
  student_id UUID NOT NULL REFERENCES students(id) ON DELETE RESTRICT,
  registration_type VARCHAR(20) NOT NULL CHECK (registration_type IN ('FREE', 'PAID', 'WAITLIST')),
  payment_status VARCHAR(20) DEFAULT 'PENDING' CHECK (payment_status IN
    ('PENDING', 'COMPLETED', 'FAILED', 'REFUNDED', 'NOT_REQUIRED')),
  registration_status VARCHAR(20) DEFAULT 'CONFIRMED' CHECK (registration_status IN
    ('CONFIRMED', 'CANCELLED', 'WAITLISTED', 'EXPIRED')),
  registered_at TIMESTAMP DEFAULT NOW(),
  updated_at TIMESTAMP DEFAULT NOW(),
  UNIQUE (event_id, student_id)
);

ALTER TABLE stalls ADD COLUMN IF NOT EXISTS event_id UUID REFERENCES events(id) ON DELETE CASCADE;
CREATE INDEX IF NOT EXISTS idx_stalls_event ON stalls(event_id);

-- What the app's scan, feedback and ranking paths add to; an imported row takes the defaults.
ALTER TABLE students ADD COLUMN IF NOT EXISTS is_inside_event BOOLEAN DEFAULT FALSE;
ALTER TABLE students ADD COLUMN IF NOT EXISTS total_scan_count INTEGER DEFAULT 0;
ALTER TABLE students ADD COLUMN IF NOT EXISTS feedback_count INTEGER DEFAULT 0;
ALTER TABLE students ADD COLUMN IF NOT EXISTS total_events_registered INTEGER DEFAULT 0;
ALTER TABLE stalls ADD COLUMN IF NOT EXISTS total_feedback_count INTEGER DEFAULT 0;
ALTER TABLE stalls ADD COLUMN IF NOT EXISTS weighted_score DECIMAL(10, 2) DEFAULT 0.00;

-- make-dob-pincode-mandatory.js: both required, and a realistic date of birth.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM students WHERE date_of_birth IS NULL OR pincode IS NULL) THEN
    ALTER TABLE students ALTER COLUMN date_of_birth SET NOT NULL;
    ALTER TABLE students ALTER COLUMN pincode SET NOT NULL;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'chk_dob_realistic') THEN
    ALTER TABLE students ADD CONSTRAINT chk_dob_realistic
      CHECK (date_of_birth >= '1945-01-01' AND date_of_birth <= CURRENT_DATE - INTERVAL '15 years')
      NOT VALID;
  END IF;
END $$;
