//! The plain command: flags become the same payload the Lambda takes; the summary goes to
//! stdout (or JSON with `--json`), a progress bar to stderr on a terminal.

use std::io::IsTerminal;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};
use shared::kind::Kind;
use shared::warm::Progress;
use warm_qr_cache::{Clients, Job};

const USAGE: &str = "\
Warms the QR image cache: every student and stall gets a QR token (minted in the app's format
when it has none) and its image in Redis.

Usage: warm-qr-cache [--kinds students,stalls] [--force] [--no-mint] [--ids ID,ID...] [--shard N --shards M] [--json]
       warm-qr-cache --rotating [--everyone] [--windows-ahead N] [--json]
       warm-qr-cache --sample-hit-rate [--json]
       warm-qr-cache --payload '{\"kinds\": [\"students\"], \"force\": true}'

  --kinds     only these kinds (default: both)
  --force     re-render every image, even those already cached (after changing QR settings)
  --no-mint   leave rows without a token as they are
  --ids       only these rows (after regenerating their tokens)
  --shard N --shards M
              warm share N of M (0-based), to split a very large event across runs
  --rotating  prepare the rotating QRs of the current window and the next ones (default 2)
              for the students registered for an event running today
  --everyone  with --rotating: for every student
  --windows-ahead N
              with --rotating: windows after the current one (0..10)
  --sample-hit-rate
              take one sample of the cache hit rate and emit it as metrics
  --payload   the Lambda's JSON payload, as is
  --json      print the summary as JSON instead of text

Configuration comes from the environment: NEON_DATABASE_URL (or DATABASE_URL), REDIS_URL (or
REDIS_HOST, REDIS_PORT, REDIS_USERNAME, REDIS_PASSWORD, REDIS_DB), JWT_SECRET,
QR_CACHE_TTL_SECS, CACHE_KEY_PREFIX, QR_WIDTH_PX, QR_MARGIN, QR_ECC, LOG_LEVEL.
Exit status: 0 when every image is cached, 1 when the job failed, 2 for a usage error.";

struct Options {
    payload: Value,
    json: bool,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut payload = Map::new();
    let mut json_output = false;
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let list = |text: String| -> Value { text.split(',').map(|s| json!(s.trim())).collect() };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--json" => json_output = true,
            "--force" => {
                payload.insert("force".into(), json!(true));
            }
            "--no-mint" => {
                payload.insert("mint".into(), json!(false));
            }
            "--rotating" => {
                payload.insert("mode".into(), json!("rotating"));
            }
            "--everyone" => {
                payload.insert("audience".into(), json!("everyone"));
            }
            "--sample-hit-rate" => {
                payload.insert("mode".into(), json!("sample_hit_rate"));
            }
            "--kinds" => {
                payload.insert("kinds".into(), list(value("--kinds")?));
            }
            "--ids" => {
                payload.insert("ids".into(), list(value("--ids")?));
            }
            "--shard" | "--shards" | "--windows-ahead" => {
                let text = value(&arg)?;
                let number: u32 = text
                    .parse()
                    .map_err(|_| format!("{arg} needs a number, got `{text}`"))?;
                payload.insert(
                    arg.trim_start_matches("--").replace('-', "_"),
                    json!(number),
                );
            }
            "--payload" => {
                let text = value("--payload")?;
                let parsed: Value = serde_json::from_str(&text)
                    .map_err(|e| format!("--payload is not JSON: {e}"))?;
                return Ok(Some(Options {
                    payload: parsed,
                    json: json_output,
                }));
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Some(Options {
        payload: Value::Object(payload),
        json: json_output,
    }))
}

/// A progress bar per kind, drawn only when stderr is a terminal.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, kind: Kind, total: u64) {
        self.0.reset();
        self.0.set_length(total);
        self.0.set_prefix(kind.title());
    }

    fn advance(&self, rows: u64) {
        self.0.inc(rows);
    }

    fn finish(&self, _kind: Kind) {
        self.0.finish_and_clear();
    }
}

pub async fn run(clients: &Clients) -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("warm-qr-cache: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let job = match Job::from_event(&options.payload) {
        Ok(job) => job,
        Err(error) => {
            eprintln!("warm-qr-cache: {error}");
            return ExitCode::from(2);
        }
    };
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        Bar(bar)
    } else {
        Bar(ProgressBar::hidden())
    };
    let (summary, ok) = match warm_qr_cache::run(&job, clients, &bar).await {
        Ok(summary) => (Some(summary), true),
        Err(failed) => {
            eprintln!("warm-qr-cache: {}", failed.error);
            (failed.summary, false)
        }
    };
    match (summary, options.json) {
        (Some(summary), true) => match serde_json::to_string(&summary) {
            Ok(text) => println!("{text}"),
            Err(error) => eprintln!("warm-qr-cache: summary not printable: {error}"),
        },
        (Some(summary), false) => println!("{summary}"),
        (None, _) => {}
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Options>, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags_become_the_lambda_payload() {
        let options = parse(&[
            "--kinds", "students", "--force", "--shard", "1", "--shards", "4", "--json",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            options.payload,
            json!({"kinds": ["students"], "force": true, "shard": 1, "shards": 4})
        );
        assert!(options.json);
        let Job::Static(request) = Job::from_event(&options.payload).unwrap() else {
            panic!("not a static warm");
        };
        assert_eq!(request.kinds, vec![Kind::Students]);
    }

    #[test]
    fn rotating_and_sampler_flags_choose_their_jobs() {
        let options = parse(&["--rotating", "--everyone", "--windows-ahead", "0"])
            .unwrap()
            .unwrap();
        assert_eq!(
            options.payload,
            json!({"mode": "rotating", "audience": "everyone", "windows_ahead": 0})
        );
        assert!(matches!(
            Job::from_event(&options.payload).unwrap(),
            Job::Rotating(_)
        ));
        let options = parse(&["--sample-hit-rate"]).unwrap().unwrap();
        assert_eq!(
            Job::from_event(&options.payload).unwrap(),
            Job::SampleHitRate
        );
        let options = parse(&["--no-mint"]).unwrap().unwrap();
        assert!(matches!(
            Job::from_event(&options.payload).unwrap(),
            Job::Static(shared::warm::WarmRequest { mint: false, .. })
        ));
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        assert_eq!(
            parse(&["--shard", "one"]).err().unwrap(),
            "--shard needs a number, got `one`"
        );
        assert_eq!(parse(&["--kinds"]).err().unwrap(), "--kinds needs a value");
        assert_eq!(
            parse(&["--what"]).err().unwrap(),
            "unknown argument `--what`"
        );
        assert!(parse(&["--payload", "{"])
            .err()
            .unwrap()
            .starts_with("--payload is not JSON"));
        assert!(parse(&["--help"]).unwrap().is_none());
    }
}
