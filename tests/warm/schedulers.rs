//! The files in `deploy/` and `.github/workflows/` that schedule the plain command: each runs
//! the same binary with the same env file, and shows the same summary and exit status, as far
//! as each scheduler can run here. The install paths the files name are swapped for this
//! build's binary and a test env file; nothing else in them is changed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use end_to_end::{binary, output_text, redis_url, test_cache, TestDb, JWT_SECRET};

const BINARY: &str = "/usr/local/bin/warm-qr-cache";
const ENV_FILE: &str = "/etc/qr-functions/warm-qr-cache.env";
const CRON_LOG: &str = "/var/log/qr-functions/warm-qr-cache.log";

fn repository_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qr-{label}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A shipped file with its install paths pointing into `dir` and at this build's binary.
fn installed(text: &str, dir: &Path) -> String {
    assert!(text.contains(BINARY), "the file runs {BINARY}");
    text.replace(BINARY, binary("warm-qr-cache").to_str().unwrap())
        .replace(ENV_FILE, dir.join("warm-qr-cache.env").to_str().unwrap())
        .replace(CRON_LOG, dir.join("warm-qr-cache.log").to_str().unwrap())
}

/// The operator's env file, in the single-quoted form deploy/warm-qr-cache.env.example asks for.
fn write_env_file(dir: &Path, vars: &[(&str, String)]) {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("warm-qr-cache.env");
    let text: String = vars.iter().map(|(k, v)| format!("{k}='{v}'\n")).collect();
    std::fs::write(&path, format!("# test env file\n\n{text}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A data set and the env files that warm it, or fail to.
struct Scene {
    _db: TestDb,
    good: Vec<(&'static str, String)>,
    unreachable_db: Vec<(&'static str, String)>,
    no_secret: Vec<(&'static str, String)>,
}

async fn scene() -> Scene {
    let db = TestDb::create().await;
    db.seed(12, 3).await;
    let cache = test_cache(600);
    // `$`, `&` and `?` in the URL: the quoting must carry them through sh, systemd and PM2.
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_password(Some("pa$$&word")).unwrap();
    url.query_pairs_mut().append_pair("connect_timeout", "5");
    let good = vec![
        ("NEON_DATABASE_URL", url.to_string()),
        ("REDIS_URL", redis_url()),
        ("JWT_SECRET", JWT_SECRET.to_string()),
        ("CACHE_KEY_PREFIX", cache.settings().key_prefix.clone()),
    ];
    let mut unreachable_db = good.clone();
    unreachable_db[0].1 =
        "postgres://postgres@127.0.0.1:1/gone?sslmode=disable&connect_timeout=2".into();
    let no_secret = good
        .iter()
        .filter(|(k, _)| *k != "JWT_SECRET")
        .cloned()
        .collect();
    Scene {
        _db: db,
        good,
        unreachable_db,
        no_secret,
    }
}

fn assert_summary(text: &str) {
    assert!(
        text.contains("Students: 12/12 cached (0 failed)")
            && text.contains("Stalls: 3/3 cached (0 failed)")
            && text.contains("QRs/second"),
        "no summary in: {text}"
    );
}

/// The crontab's command as cron runs it: `/bin/sh -c` with cron's small environment; what it
/// prints is what cron mails.
fn run_cron_command(command: &str, dir: &Path) -> Output {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", dir)
        .env("SHELL", "/bin/sh")
        .env("LOGNAME", "root")
        .current_dir(dir)
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_crontab_line_warms_logs_the_summary_and_mails_only_a_failure() {
    let scene = scene().await;
    let crontab = repository_file("deploy/cron/warm-qr-cache.crontab");
    let line = crontab
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .expect("a crontab line");
    let fields: Vec<&str> = line.splitn(6, ' ').collect();
    assert_eq!(fields[..5], ["0", "6", "*", "*", "*"], "daily at 06:00");
    // cron turns an unescaped % into a newline: the command must have none.
    assert!(!fields[5].contains('%'), "{}", fields[5]);
    let dir = temp_dir("cron");
    let command = installed(fields[5], &dir);
    let log = dir.join("warm-qr-cache.log");

    write_env_file(&dir, &scene.good);
    let output = run_cron_command(&command, &dir);
    assert!(output.status.success(), "{}", output_text(&output));
    assert_eq!(output_text(&output), "", "a good run mails nothing");
    assert_summary(&std::fs::read_to_string(&log).unwrap());

    write_env_file(&dir, &scene.unreachable_db);
    let output = run_cron_command(&command, &dir);
    assert_eq!(
        output_text(&output),
        format!(
            "warm-qr-cache failed with exit status 1; its log is {}\n",
            log.display()
        )
    );
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("Postgres unreachable: renewed the TTL of"));

    write_env_file(&dir, &scene.no_secret);
    let output = run_cron_command(&command, &dir);
    assert_eq!(
        output_text(&output),
        format!(
            "warm-qr-cache failed with exit status 2; its log is {}\n",
            log.display()
        )
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("JWT_SECRET is not set"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn pm2_program() -> PathBuf {
    let on_path = Command::new("sh")
        .args(["-c", "command -v pm2"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let path = on_path
        .unwrap_or_else(|| PathBuf::from("/var/tmp/qr-functions-tools/node_modules/.bin/pm2"));
    assert!(
        path.exists(),
        "pm2 not installed: scripts/test-services.sh installs it"
    );
    path
}

/// A PM2 daemon of the test's own (its own PM2_HOME), killed when the test ends.
struct Pm2 {
    program: PathBuf,
    home: PathBuf,
    dir: PathBuf,
}

impl Pm2 {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.program)
            .args(args)
            .env("PM2_HOME", &self.home)
            .current_dir(&self.dir)
            .output()
            .unwrap()
    }

    /// The app's PM2 record once the warm has exited.
    fn exited(&self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list: serde_json::Value =
                serde_json::from_slice(&self.run(&["jlist"]).stdout).unwrap_or_default();
            if let Some(app) = list.get(0) {
                let status = app["pm2_env"]["status"].as_str().unwrap_or_default();
                if status == "stopped" || status == "errored" {
                    return app.clone();
                }
            }
            assert!(Instant::now() < deadline, "the warm did not exit: {list}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Pm2 {
    fn drop(&mut self) {
        let _ = self.run(&["kill"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn the_pm2_ecosystem_file_runs_the_warm_once_then_daily_with_its_exit_status() {
    let scene = scene().await;
    let dir = temp_dir("pm2");
    let pm2 = Pm2 {
        program: pm2_program(),
        home: dir.join("pm2-home"),
        dir: dir.clone(),
    };
    let ecosystem = installed(&repository_file("deploy/pm2/ecosystem.config.js"), &dir);
    std::fs::write(dir.join("ecosystem.config.js"), ecosystem).unwrap();

    write_env_file(&dir, &scene.good);
    let started = pm2.run(&["start", "ecosystem.config.js"]);
    assert!(started.status.success(), "{}", output_text(&started));
    let app = pm2.exited();
    let env = &app["pm2_env"];
    assert_eq!(env["exit_code"], 0, "{app}");
    assert_eq!(env["cron_restart"], "0 6 * * *");
    assert_eq!(env["autorestart"], false);
    assert_eq!(
        env["pm_exec_path"],
        binary("warm-qr-cache").to_str().unwrap()
    );
    assert_eq!(env["NEON_DATABASE_URL"], scene.good[0].1.as_str());
    let out = std::fs::read_to_string(env["pm_out_log_path"].as_str().unwrap()).unwrap();
    assert_summary(&out);

    write_env_file(&dir, &scene.unreachable_db);
    let restarted = pm2.run(&["delete", "all"]);
    assert!(restarted.status.success(), "{}", output_text(&restarted));
    let started = pm2.run(&["start", "ecosystem.config.js"]);
    assert!(started.status.success(), "{}", output_text(&started));
    let app = pm2.exited();
    assert_eq!(app["pm2_env"]["exit_code"], 1, "{app}");
    let errors =
        std::fs::read_to_string(app["pm2_env"]["pm_err_log_path"].as_str().unwrap()).unwrap();
    assert!(errors.contains("Postgres unreachable"), "{errors}");

    // An env file PM2 cannot read stops `pm2 start` with the file's name, before any warm.
    std::fs::remove_file(dir.join("warm-qr-cache.env")).unwrap();
    let refused = pm2.run(&["start", "ecosystem.config.js"]);
    assert!(!refused.status.success());
    assert!(
        output_text(&refused).contains("warm-qr-cache.env"),
        "{}",
        output_text(&refused)
    );
}

fn unit_setting<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

fn systemd_verify(root: &Path) -> Output {
    Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args([
            "/etc/systemd/system/warm-qr-cache.service",
            "/etc/systemd/system/warm-qr-cache.timer",
        ])
        .output()
        .expect("systemd-analyze on PATH (scripts/test-services.sh installs systemd)")
}

/// `systemd-analyze verify` checks that ExecStart exists and is executable, so the units are
/// verified in a root of their own that has the system's units, the units, and (when asked)
/// the binary at its install path. No systemd runs here to start them: the binary and env file
/// they name are the ones the crontab test runs.
#[test]
fn the_systemd_units_verify_and_name_the_same_binary_and_env_file() {
    let service = repository_file("deploy/systemd/warm-qr-cache.service");
    let timer = repository_file("deploy/systemd/warm-qr-cache.timer");
    assert_eq!(unit_setting(&service, "ExecStart"), [BINARY]);
    assert_eq!(unit_setting(&service, "EnvironmentFile"), [ENV_FILE]);
    assert_eq!(unit_setting(&service, "Type"), ["oneshot"]);
    assert_eq!(
        unit_setting(&timer, "OnCalendar"),
        ["*-*-* 06:00:00 Asia/Kolkata"]
    );

    let root = temp_dir("systemd");
    let units = root.join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::write(units.join("warm-qr-cache.service"), &service).unwrap();
    std::fs::write(units.join("warm-qr-cache.timer"), &timer).unwrap();
    let system_units = root.join("usr/lib/systemd");
    std::fs::create_dir_all(&system_units).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg("/lib/systemd/system")
        .arg(&system_units)
        .status()
        .unwrap();
    assert!(copied.success());

    let output = systemd_verify(&root);
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "Command {BINARY} is not executable: No such file or directory"
        )),
        "{text}"
    );

    let installed = root.join(BINARY.trim_start_matches('/'));
    std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
    if std::fs::hard_link(binary("warm-qr-cache"), &installed).is_err() {
        std::fs::copy(binary("warm-qr-cache"), &installed).unwrap();
    }
    let output = systemd_verify(&root);
    assert!(output.status.success(), "{}", output_text(&output));
    assert_eq!(output_text(&output), "");
    let _ = std::fs::remove_dir_all(&root);
}

const WORKFLOW: &str = ".github/workflows/warm-qr-cache.yml";

fn check_workflow_schema(path: &Path) -> Output {
    Command::new("check-jsonschema")
        .args(["--builtin-schema", "vendor.github-workflows"])
        .arg(path)
        .output()
        .expect("check-jsonschema on PATH (scripts/test-services.sh installs it)")
}

/// The workflow as data, read by the YAML parser check-jsonschema itself uses.
fn workflow_json(path: &Path) -> serde_json::Value {
    let output = Command::new("python3")
        .args([
            "-c",
            "import json, sys, ruamel.yaml; print(json.dumps(ruamel.yaml.YAML(typ='safe').load(open(sys.argv[1]))))",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", output_text(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn the_workflow_is_valid_and_its_warm_step_runs_the_binary_with_the_secrets() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(WORKFLOW);
    let output = check_workflow_schema(&path);
    assert!(output.status.success(), "{}", output_text(&output));
    let dir = temp_dir("workflow");
    let broken = dir.join("broken.yml");
    std::fs::write(
        &broken,
        repository_file(WORKFLOW).replace("runs-on: ubuntu-latest", "runs_on: ubuntu-latest"),
    )
    .unwrap();
    assert!(!check_workflow_schema(&broken).status.success());

    let workflow = workflow_json(&path);
    assert_eq!(workflow["on"]["schedule"][0]["cron"], "30 0 * * *");
    let job = &workflow["jobs"]["warm"];
    assert_eq!(job["defaults"]["run"]["shell"], "bash");
    let step = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "Warm")
        .expect("a Warm step");
    for name in ["NEON_DATABASE_URL", "REDIS_URL", "JWT_SECRET"] {
        assert_eq!(step["env"][name], format!("${{{{ secrets.{name} }}}}"));
    }
    let script = step["run"].as_str().unwrap();
    assert!(
        script.starts_with("target/release/warm-qr-cache"),
        "{script}"
    );

    // The step's script as the runner runs it for `shell: bash`, in a checkout whose
    // target/release holds this build's binary, with the secrets as the step's env.
    let release = dir.join("target/release");
    std::fs::create_dir_all(&release).unwrap();
    std::os::unix::fs::symlink(binary("warm-qr-cache"), release.join("warm-qr-cache")).unwrap();
    let scene = scene().await;
    let run_step = |vars: &[(&str, String)]| {
        Command::new("bash")
            .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    let output = run_step(&scene.good);
    assert!(output.status.success(), "{}", output_text(&output));
    assert_summary(&std::fs::read_to_string(dir.join("summary.txt")).unwrap());
    let output = run_step(&scene.unreachable_db);
    assert_eq!(output.status.code(), Some(1), "{}", output_text(&output));
    let output = run_step(&scene.no_secret);
    assert_eq!(output.status.code(), Some(2), "{}", output_text(&output));
    let _ = std::fs::remove_dir_all(&dir);
}
