//! What carries a QR token: students and stalls. A leaf that the spreadsheet reader, the
//! database queries and the jobs all name.

/// The two kinds of record that carry QR tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Students,
    Stalls,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Students, Kind::Stalls];

    pub fn table(self) -> &'static str {
        match self {
            Kind::Students => "students",
            Kind::Stalls => "stalls",
        }
    }

    /// The column that names a row for people and in its QR token.
    pub fn natural_key(self) -> &'static str {
        match self {
            Kind::Students => "registration_no",
            Kind::Stalls => "stall_number",
        }
    }

    /// "Students" / "Stalls", as summaries print it.
    pub fn title(self) -> &'static str {
        match self {
            Kind::Students => "Students",
            Kind::Stalls => "Stalls",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.table())
    }
}

impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "students" | "student" => Ok(Kind::Students),
            "stalls" | "stall" => Ok(Kind::Stalls),
            other => Err(format!("`{other}` is not a kind (students or stalls)")),
        }
    }
}
