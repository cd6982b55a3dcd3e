"""The event side of scripts/local.sh: makes every sample event in events/ one a local server
can answer, and checks each answer against what events/README.md promises.

  prepare EVENTS OUT UPLOADS STUDENT_ID
      uploads the objects the S3 events name (and the one the dry-run event names) to the S3
      server at AWS_ENDPOINT_URL_S3, bucket IMPORT_BUCKET (versioned, as the template's is);
      writes a copy of every event into OUT with the uploaded objects' version, ETag and size,
      fresh session tokens signed with JWT_SECRET, and a demo student's id in place of the
      sample one. The committed events are never changed.
  import-id OUT IMPORT_ID
      puts the id of the import the students event made into the status event's path.
  check OUT ANSWERS
      prints one line per event, and exits 1 if any answer is not the promised one.

Only Python's standard library and boto3 (which moto's server brings)."""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.parse
from pathlib import Path

SAMPLE_STUDENT = "5ca6f5a1-ba89-45f6-a8dc-08ac39c3a3b3"
SAMPLE_IMPORT = "3f6b2c1e-8d4a-4e7b-9a05-1c2d3e4f5a6b"
ADMIN_ID = "7a0c0b4e-2f7f-4f8a-9d53-5d9a3c1f0b11"
TOKEN_PLACEHOLDER = "REPLACE_WITH_SESSION_TOKEN"


def session_token(user_id, role):
    """The app's session token: HS256 over {id, role, exp}, as functions/http-api/src/auth.rs checks it."""

    def part(value):
        text = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(text).rstrip(b"=").decode()

    signed = part({"alg": "HS256", "typ": "JWT"}) + "." + part(
        {"id": user_id, "role": role, "exp": int(time.time()) + 3600}
    )
    mac = hmac.new(os.environ["JWT_SECRET"].encode(), signed.encode(), hashlib.sha256)
    return signed + "." + base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


def s3_client():
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}),
    )


def upload_body(key, uploads):
    """What to upload under a key an event names: the students sheet, the stalls CSV, or (for the
    importer's own report, which it skips) a small JSON."""
    name = key.rsplit("/", 1)[-1]
    if name.endswith((".xlsx", ".xls")):
        return (uploads / "students.xlsx").read_bytes()
    if name.endswith(".csv"):
        return (uploads / "stalls.csv").read_bytes()
    return b"{}\n"


def prepare(events, out, uploads, student_id):
    bucket = os.environ["IMPORT_BUCKET"]
    s3 = s3_client()
    existing = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    out.mkdir(parents=True, exist_ok=True)
    admin = session_token(ADMIN_ID, "ADMIN")
    student = session_token(student_id, "STUDENT")
    for path in sorted(events.glob("*.json")):
        event = json.loads(path.read_text())
        for record in event.get("Records", []) if isinstance(event, dict) else []:
            s3_object = record["s3"]["object"]
            record["s3"]["bucket"]["name"] = bucket
            record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
            key = urllib.parse.unquote_plus(s3_object["key"])
            body = upload_body(key, uploads)
            put = s3.put_object(Bucket=bucket, Key=key, Body=body)
            s3_object["eTag"] = put["ETag"].strip('"')
            s3_object["versionId"] = put["VersionId"]
            s3_object["size"] = len(body)
        if path.name.startswith("api-"):
            text = json.dumps(event)
            token = student if path.name == "api-rotating-qr.json" else admin
            text = text.replace(TOKEN_PLACEHOLDER, token).replace(SAMPLE_STUDENT, student_id)
            event = json.loads(text)
            body = json.loads(event.get("body") or "null")
            if isinstance(body, dict) and "key" in body:
                s3.put_object(Bucket=bucket, Key=body["key"], Body=upload_body(body["key"], uploads))
        (out / path.name).write_text(json.dumps(event, indent=2) + "\n")


def set_import_id(out, import_id):
    path = out / "api-import-status.json"
    path.write_text(path.read_text().replace(SAMPLE_IMPORT, import_id))


def static_warm(answer, kinds, everything=True):
    got = {k["kind"]: k for k in answer.get("kinds", [])}
    if sorted(got) != sorted(kinds):
        return f"kinds {sorted(got)}, expected {sorted(kinds)}"
    for kind, counts in got.items():
        if counts.get("failed") != 0:
            return f"{kind}: {counts.get('failed')} failed"
        if everything and (counts.get("total", 0) == 0 or counts.get("cached") != counts.get("total")):
            return f"{kind}: {counts.get('cached')}/{counts.get('total')} cached"
    return None


def api(status, content_type=None, has=None):
    def check(answer):
        if answer.get("statusCode") != status:
            return f"status {answer.get('statusCode')}, expected {status}: {str(answer.get('body'))[:200]}"
        headers = {k.lower(): v for k, v in (answer.get("headers") or {}).items()}
        if content_type and not headers.get("content-type", "").startswith(content_type):
            return f"content-type {headers.get('content-type')}, expected {content_type}"
        if has:
            body = answer.get("body") or ""
            if answer.get("isBase64Encoded"):
                body = base64.b64decode(body).decode("latin-1")
            missing = [text for text in has if text not in body]
            if missing:
                return f"body lacks {missing}: {body[:200]}"
        return None

    return check


def import_report(inserted):
    def check(answer):
        (report,) = answer
        counts = report["counts"]
        if report["outcome"] != "imported" or counts["inserted"] != inserted or counts["rejected"]:
            return f"{report['outcome']}, counts {counts}, error {report.get('error')}"
        if report["qr_cached"] != inserted:
            return f"{report['qr_cached']} QR images cached, expected {inserted}"
        return None

    return check


def skipped(answer):
    (report,) = answer
    return None if report["outcome"] == "skipped" and report["reason"] else f"{report}"


def on_demand(answer):
    problem = static_warm(answer, ["students"])
    if problem is None and not (answer["force"] and answer["kinds"][0]["rendered"] == answer["kinds"][0]["total"]):
        return f"not every image re-rendered: {answer['kinds'][0]}"
    return problem


def shard(answer):
    # Rows fall into shards by a hash of their random id: a quarter of 12 stalls may be none.
    problem = static_warm(answer, ["students", "stalls"], everything=False)
    if problem is None and answer["shard"] != {"count": 4, "index": 0}:
        return f"shard {answer['shard']}"
    for counts in answer["kinds"]:
        if problem is None and counts.get("cached") != counts.get("total"):
            problem = f"{counts['kind']}: {counts.get('cached')}/{counts.get('total')} cached"
    if problem is None and sum(k.get("total", 0) for k in answer["kinds"]) == 0:
        problem = "the shard held no rows at all"
    return problem


def rotating(answer):
    if answer["failed"] or not answer["students"] or len(answer["windows"]) != 3:
        return f"{answer['students']} students, {answer['failed']} failed, windows {answer['windows']}"
    if answer["rendered"] + answer["already_cached"] != 3 * answer["students"]:
        return f"{answer['rendered']} rendered for {answer['students']} students"
    return None


def hit_rate(answer):
    server = answer["server"]
    return None if server["hits"] + server["misses"] > 0 and "api_static" in answer else f"{answer}"


def dry_run(answer):
    problem = api(200, "application/json")(answer)
    if problem:
        return problem
    report = json.loads(answer["body"])
    if report["status"] != "valid" or report["counts"]["rejected"] or not report["counts"]["rows"]:
        return f"status {report['status']}, counts {report['counts']}, error {report['error']}"
    return None


# What events/README.md says each event does, as a check of the function's answer.
EXPECTED = {
    "warm-scheduled.json": ("full warm, nothing failed", lambda a: static_warm(a, ["students", "stalls"])),
    "warm-scheduler.json": ("full warm, nothing failed", lambda a: static_warm(a, ["students", "stalls"])),
    "warm-on-demand.json": ("every student re-rendered", on_demand),
    "warm-shard.json": ("shard 0 of 4 warmed", shard),
    "warm-after-token-regeneration.json": (
        "ids of no demo row: nothing cached, nothing failed",
        lambda a: static_warm(a, ["students"], everything=False)
        or (None if all(k["cached"] == 0 for k in a["kinds"]) else "cached rows it should not"),
    ),
    "warm-rotating.json": ("3 windows for every registered student", rotating),
    "warm-hit-rate-sample.json": ("hit rates sampled", hit_rate),
    "import-students-put.json": ("25 students imported, QRs cached", import_report(25)),
    "import-stalls-put.json": ("5 stalls imported, QRs cached", import_report(5)),
    "import-not-an-import.json": ("skipped with a reason", skipped),
    "api-health.json": ("200 ok", api(200, "application/json", ['"status":"ok"'])),
    "api-cache-stats.json": ("200 stats", api(200, "application/json")),
    "api-qr-student.json": ("200 PNG", api(200, "image/png", ["PNG"])),
    "api-qr-json.json": ("200 data URL", api(200, "application/json", ['"qr_image":"data:image/png;base64,'])),
    "api-rotating-qr.json": ("200 envelope", api(200, "application/json", ['"success":true', '"rotation_info"'])),
    "api-create-import.json": ("201 presigned PUT", api(201, "application/json", ['"import_id"', "imports/students/"])),
    "api-validate-import.json": ("200 dry run, every row valid", dry_run),
    "api-import-status.json": ("200 status", api(200, "application/json", ['"succeeded"'])),
    "api-template.json": ("200 .xlsx", api(200, "application/vnd.openxmlformats")),
}


def check(out, answers):
    failures = 0
    rows = []
    for path in sorted(out.glob("*.json")):
        promise, verdict = EXPECTED.get(path.name, ("(no promise known)", lambda a: "no check for this event"))
        answer_path = answers / (path.name + ".answer")
        code = int((answers / (path.name + ".rc")).read_text().strip() or 1)
        text = answer_path.read_text() if answer_path.exists() else ""
        if code != 0:
            problem = f"invoke failed (exit {code}): {text.strip()[-300:]}"
        else:
            try:
                problem = verdict(json.loads(text))
            except (ValueError, KeyError, TypeError) as error:
                problem = f"unreadable answer ({error}): {text[:200]}"
        failures += problem is not None
        rows.append((path.name, promise, "ok" if problem is None else "FAILED: " + problem))
    width = max(len(r[0]) for r in rows)
    promise_width = max(len(r[1]) for r in rows)
    for name, promise, result in rows:
        print(f"{name:<{width}}  {promise:<{promise_width}}  {result}")
    print(f"{len(rows) - failures} passed, {failures} failed")
    return 1 if failures else 0


def main(args):
    if args[:1] == ["prepare"] and len(args) == 5:
        prepare(Path(args[1]), Path(args[2]), Path(args[3]), args[4])
        return 0
    if args[:1] == ["import-id"] and len(args) == 3:
        set_import_id(Path(args[1]), args[2])
        return 0
    if args[:1] == ["check"] and len(args) == 3:
        return check(Path(args[1]), Path(args[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
