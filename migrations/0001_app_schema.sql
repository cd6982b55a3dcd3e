-- The Node app's own tables, as its migrations (001, 003) define them, reduced to what these
-- functions read and write plus the columns the app needs to keep working. Every statement is
-- IF NOT EXISTS, so this is a no-op on the app's real database.

CREATE TABLE IF NOT EXISTS schools (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  school_name VARCHAR(200) UNIQUE NOT NULL,
  description TEXT,
  created_at TIMESTAMP DEFAULT NOW(),
  updated_at TIMESTAMP DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS students (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  registration_no VARCHAR(50) UNIQUE NOT NULL,
  email VARCHAR(100) UNIQUE,
  password_hash VARCHAR(255) NOT NULL,
  full_name VARCHAR(100) NOT NULL,
  school_id UUID NOT NULL REFERENCES schools(id) ON DELETE CASCADE,
  phone VARCHAR(15),
  role VARCHAR(20) DEFAULT 'STUDENT' CHECK (role IN ('STUDENT')),
  date_of_birth DATE,
  address TEXT,
  pincode VARCHAR(6) CONSTRAINT chk_pincode_format CHECK (pincode ~ '^[0-9]{6}$'),
  program_name VARCHAR(100),
  batch INTEGER CONSTRAINT chk_batch_year CHECK (batch >= 2000 AND batch <= 2035),
  password_reset_required BOOLEAN DEFAULT TRUE,
  qr_code_token TEXT,
  created_at TIMESTAMP DEFAULT NOW(),
  updated_at TIMESTAMP DEFAULT NOW()
);

-- The app reads and writes students.qr_code_token, but its migrations never add it.
ALTER TABLE students ADD COLUMN IF NOT EXISTS qr_code_token TEXT;

CREATE INDEX IF NOT EXISTS idx_students_school ON students(school_id);

CREATE TABLE IF NOT EXISTS stalls (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  stall_number VARCHAR(20) UNIQUE NOT NULL,
  stall_name VARCHAR(200) NOT NULL,
  school_id UUID NOT NULL REFERENCES schools(id) ON DELETE CASCADE,
  description TEXT,
  location VARCHAR(100),
  role VARCHAR(20) DEFAULT 'STALL' CHECK (role IN ('STALL')),
  qr_code_token TEXT UNIQUE NOT NULL,
  is_active BOOLEAN DEFAULT TRUE,
  created_at TIMESTAMP DEFAULT NOW(),
  updated_at TIMESTAMP DEFAULT NOW()
);

CREATE INDEX IF NOT EXISTS idx_stalls_school ON stalls(school_id);
