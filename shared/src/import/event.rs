//! Which uploads are imports: an S3 `ObjectCreated` record under `imports/students/` or
//! `imports/stalls/` with a spreadsheet extension. Anything else is skipped, not an error.

use aws_lambda_events::s3::S3Event;

use crate::kind::Kind;
use crate::spreadsheet::Format;

/// One uploaded object version to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportTarget {
    pub bucket: String,
    pub key: String,
    /// S3's version id when the bucket is versioned, else the ETag: what makes a re-upload of
    /// the same key a new import and a redelivered event the same one.
    pub version: String,
    pub version_id: Option<String>,
    pub kind: Kind,
    pub format: Format,
}

/// What to do with one record of an S3 event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventRecord {
    Import(ImportTarget),
    Skip { key: String, reason: String },
}

/// The prefix under which uploads of `kind` arrive.
pub fn upload_prefix(kind: Kind) -> String {
    format!("imports/{}/", kind.table())
}

/// S3 event keys are form-encoded (`+` for a space, `%xx` for the rest).
pub fn decode_key(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Classifies one object key; `Err` says why it is not an import.
pub fn classify(key: &str) -> Result<(Kind, Format), String> {
    let kind = Kind::ALL
        .into_iter()
        .find(|kind| key.starts_with(&upload_prefix(*kind)))
        .ok_or_else(|| "not under imports/students/ or imports/stalls/".to_string())?;
    if key.ends_with('/') {
        return Err("a folder marker, not a file".into());
    }
    let format = Format::from_file_name(key).ok_or_else(|| {
        "not a spreadsheet (expected .xlsx, .xlsm, .xlsb, .xls, .ods or .csv)".to_string()
    })?;
    Ok((kind, format))
}

/// The records of an S3 event, each an import or a reasoned skip.
pub fn records(event: &S3Event) -> Vec<EventRecord> {
    event
        .records
        .iter()
        .map(|record| {
            let raw_key = record.s3.object.key.clone().unwrap_or_default();
            let key = decode_key(&raw_key);
            let event_name = record.event_name.clone().unwrap_or_default();
            if !event_name.starts_with("ObjectCreated") {
                return EventRecord::Skip {
                    key,
                    reason: format!("event {event_name} is not an upload"),
                };
            }
            let Some(bucket) = record.s3.bucket.name.clone().filter(|b| !b.is_empty()) else {
                return EventRecord::Skip {
                    key,
                    reason: "the record names no bucket".into(),
                };
            };
            match classify(&key) {
                Err(reason) => EventRecord::Skip { key, reason },
                Ok((kind, format)) => {
                    let version_id = record
                        .s3
                        .object
                        .version_id
                        .clone()
                        .filter(|v| !v.is_empty() && v != "null");
                    let e_tag = record.s3.object.e_tag.clone().unwrap_or_default();
                    let version = version_id
                        .clone()
                        .unwrap_or_else(|| e_tag.trim_matches('"').to_string());
                    if version.is_empty() {
                        return EventRecord::Skip {
                            key,
                            reason: "the record has neither a version id nor an ETag".into(),
                        };
                    }
                    EventRecord::Import(ImportTarget {
                        bucket,
                        key,
                        version,
                        version_id,
                        kind,
                        format,
                    })
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample event in `events/`, with another key and event name.
    fn event(key: &str, name: &str) -> S3Event {
        let mut event: serde_json::Value =
            serde_json::from_str(include_str!("../../../events/import-students-put.json")).unwrap();
        event["Records"][0]["s3"]["object"]["key"] = key.into();
        event["Records"][0]["eventName"] = name.into();
        event["Records"][0]["s3"]["object"]
            .as_object_mut()
            .unwrap()
            .remove("versionId");
        event["Records"][0]["s3"]["object"]["eTag"] = "0123456789abcdef".into();
        serde_json::from_value(event).unwrap()
    }

    #[test]
    fn keys_are_url_decoded_and_classified() {
        let records = records(&event(
            "imports/students/Batch+2024%2FCSE+list.xlsx",
            "ObjectCreated:Put",
        ));
        let EventRecord::Import(target) = &records[0] else {
            panic!("{records:?}")
        };
        assert_eq!(target.key, "imports/students/Batch 2024/CSE list.xlsx");
        assert_eq!((target.kind, target.format), (Kind::Students, Format::Xlsx));
        assert_eq!(target.version, "0123456789abcdef");
        assert_eq!(target.bucket, "qr-functions-dev-imports-123456789012");
    }

    #[test]
    fn other_objects_are_skipped_with_a_reason() {
        for (key, name, reason) in [
            ("reports/x.json", "ObjectCreated:Put", "not under imports/"),
            (
                "imports/teachers/x.xlsx",
                "ObjectCreated:Put",
                "not under imports/",
            ),
            ("imports/stalls/", "ObjectCreated:Put", "folder marker"),
            (
                "imports/stalls/list.pdf",
                "ObjectCreated:Put",
                "not a spreadsheet",
            ),
            (
                "imports/stalls/list.csv",
                "ObjectRemoved:Delete",
                "is not an upload",
            ),
        ] {
            match &records(&event(key, name))[0] {
                EventRecord::Skip { reason: got, .. } => {
                    assert!(got.contains(reason), "{key}: {got}")
                }
                other => panic!("{key}: {other:?}"),
            }
        }
    }
}

#[cfg(test)]
mod sample_events {
    use super::*;

    #[test]
    fn the_sample_events_classify_as_their_names_say() {
        for (file, expected) in [
            (
                include_str!("../../../events/import-students-put.json"),
                Some((Kind::Students, Format::Xlsx)),
            ),
            (
                include_str!("../../../events/import-stalls-put.json"),
                Some((Kind::Stalls, Format::Csv)),
            ),
            (
                include_str!("../../../events/import-not-an-import.json"),
                None,
            ),
        ] {
            let event: S3Event = serde_json::from_str(file).unwrap();
            match (&records(&event)[0], expected) {
                (EventRecord::Import(target), Some((kind, format))) => {
                    assert_eq!((target.kind, target.format), (kind, format));
                    assert_eq!(
                        Some(target.version.clone()),
                        target.version_id.clone(),
                        "a versioned bucket's id"
                    );
                }
                (EventRecord::Skip { .. }, None) => {}
                (other, _) => panic!("{other:?}"),
            }
        }
    }
}
