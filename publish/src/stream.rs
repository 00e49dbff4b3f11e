//! Keeping the stream in shape: create it when missing; when it exists add the subjects
//! it lacks and reconcile its replica count, and leave every other setting the operator
//! made alone.
//!
//! The existing configuration is edited as raw JSON, not through async-nats' typed
//! `Config`: a field the client library does not know (a newer server's) would otherwise
//! be dropped from the update and silently reset.

use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::context::RequestError;
use async_nats::jetstream::context::RequestErrorKind;
use serde_json::{Value, json};
use thiserror::Error;

use crate::settings::StreamSettings;

/// JetStream API error codes this module acts on.
const STREAM_NOT_FOUND: u64 = 10059;
const STREAM_NAME_IN_USE: u64 = 10058;
const SUBJECTS_OVERLAP: u64 = 10065;

/// Why the stream could not be brought into shape.
#[derive(Debug, Error)]
pub enum StreamError {
    #[error(
        "stream {stream} cannot capture its subjects: {}; remove the subject from the other \
         stream (e.g. `nats stream rm <stream>` if it is obsolete) or publish on another subject",
        describe_conflicts(conflicts)
    )]
    SubjectOwnedByOtherStream { stream: String, conflicts: Vec<SubjectConflict> },

    #[error(
        "stream {stream} has no subjects to capture: give stream_subjects or listener subjects"
    )]
    NoSubjects { stream: String },

    #[error(
        "JetStream is not available for stream {stream} ({detail}); is the server started \
         with JetStream enabled (-js) and is it enabled for this account?"
    )]
    JetStreamUnavailable { stream: String, detail: String },

    #[error("JetStream request to {action} stream {stream} failed: {detail}")]
    Request { stream: String, action: &'static str, detail: String },

    #[error("JetStream refused to {action} stream {stream}: {error}")]
    Api { stream: String, action: &'static str, error: ApiError },
}

/// JetStream's "temporarily unavailable" (no quorum, leader election, still starting).
const JETSTREAM_TEMPORARILY_UNAVAILABLE: u64 = 10008;

impl StreamError {
    /// Whether asking again later may succeed: a request that timed out or a JetStream
    /// that is only temporarily unavailable. Configuration problems are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            StreamError::Request { .. } => true,
            StreamError::Api { error, .. } => {
                error.code == 503 || error.err_code == JETSTREAM_TEMPORARILY_UNAVAILABLE
            }
            StreamError::SubjectOwnedByOtherStream { .. }
            | StreamError::NoSubjects { .. }
            | StreamError::JetStreamUnavailable { .. } => false,
        }
    }
}

/// A subject the stream needs that another stream already captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectConflict {
    pub subject: String,
    pub owner: String,
}

fn describe_conflicts(conflicts: &[SubjectConflict]) -> String {
    if conflicts.is_empty() {
        return "a subject is already captured by another stream".into();
    }
    conflicts
        .iter()
        .map(|c| format!("subject {} is already captured by stream {}", c.subject, c.owner))
        .collect::<Vec<_>>()
        .join("; ")
}

/// An error reply of the JetStream API.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{description} (code {code}, error code {err_code})")]
pub struct ApiError {
    pub code: u64,
    pub err_code: u64,
    pub description: String,
}

/// What `ensure_stream` did, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsureOutcome {
    pub change: StreamChange,
    /// The stream's `Nats-Msg-Id` dedupe window as the server has it (an existing
    /// stream keeps the operator's). Retries must stay inside it.
    pub duplicate_window: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamChange {
    Created,
    Updated {
        added_subjects: Vec<String>,
        /// `(before, after)` when the replica count changed.
        replicas: Option<(usize, usize)>,
    },
    Unchanged,
}

impl std::fmt::Display for StreamChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamChange::Created => f.write_str("created"),
            StreamChange::Unchanged => f.write_str("unchanged"),
            StreamChange::Updated { added_subjects, replicas } => {
                f.write_str("updated:")?;
                if !added_subjects.is_empty() {
                    write!(f, " added subjects {}", added_subjects.join(", "))?;
                }
                if let Some((before, after)) = replicas {
                    write!(f, " replicas {before} -> {after}")?;
                }
                Ok(())
            }
        }
    }
}

/// Creates the stream, or adds missing subjects and reconciles replicas on the existing one.
pub async fn ensure_stream(
    js: &Context,
    wanted: &StreamSettings,
) -> Result<EnsureOutcome, StreamError> {
    if wanted.subjects.is_empty() {
        return Err(StreamError::NoSubjects { stream: wanted.name.clone() });
    }
    match stream_config(js, &wanted.name).await? {
        Some(config) => reconcile(js, wanted, config).await,
        None => match create(js, wanted).await {
            // Someone else created it between our lookup and our create.
            Err(StreamError::Api { error, .. }) if error.err_code == STREAM_NAME_IN_USE => {
                let config = stream_config(js, &wanted.name).await?.ok_or_else(|| {
                    StreamError::Api { stream: wanted.name.clone(), action: "create", error }
                })?;
                reconcile(js, wanted, config).await
            }
            other => other,
        },
    }
}

/// The stream's configuration as the server returns it, or `None` when it does not exist.
async fn stream_config(js: &Context, name: &str) -> Result<Option<Value>, StreamError> {
    match api(js, name, "look up", format!("STREAM.INFO.{name}"), &json!({})).await {
        Ok(mut info) => Ok(Some(info["config"].take())),
        Err(StreamError::Api { error, .. }) if error.err_code == STREAM_NOT_FOUND => Ok(None),
        Err(e) => Err(e),
    }
}

async fn create(js: &Context, wanted: &StreamSettings) -> Result<EnsureOutcome, StreamError> {
    let config = json!({
        "name": wanted.name,
        "subjects": wanted.subjects,
        "retention": "limits",
        "storage": "file",
        "discard": "old",
        "max_bytes": wanted.max_bytes,
        "num_replicas": wanted.replicas,
        "duplicate_window": duration_nanos(wanted.duplicate_window),
    });
    let subject = format!("STREAM.CREATE.{}", wanted.name);
    let mut info =
        with_conflicts(js, wanted, api(js, &wanted.name, "create", subject, &config)).await?;
    Ok(EnsureOutcome {
        change: StreamChange::Created,
        duplicate_window: duplicate_window(&info["config"].take()),
    })
}

async fn reconcile(
    js: &Context,
    wanted: &StreamSettings,
    mut config: Value,
) -> Result<EnsureOutcome, StreamError> {
    let current: Vec<String> = config["subjects"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let added_subjects = missing_subjects(&current, &wanted.subjects);
    let replicas_before = config["num_replicas"].as_u64().map_or(1, |r| r as usize);
    let replicas =
        (replicas_before != wanted.replicas).then_some((replicas_before, wanted.replicas));
    if added_subjects.is_empty() && replicas.is_none() {
        return Ok(EnsureOutcome {
            change: StreamChange::Unchanged,
            duplicate_window: duplicate_window(&config),
        });
    }
    let mut subjects = current;
    subjects.extend(added_subjects.iter().cloned());
    config["subjects"] = json!(subjects);
    config["num_replicas"] = json!(wanted.replicas);
    let subject = format!("STREAM.UPDATE.{}", wanted.name);
    let mut info =
        with_conflicts(js, wanted, api(js, &wanted.name, "update", subject, &config)).await?;
    Ok(EnsureOutcome {
        change: StreamChange::Updated { added_subjects, replicas },
        duplicate_window: duplicate_window(&info["config"].take()),
    })
}

/// Turns JetStream's "subjects overlap" into an error naming the streams that own them.
async fn with_conflicts(
    js: &Context,
    wanted: &StreamSettings,
    request: impl Future<Output = Result<Value, StreamError>>,
) -> Result<Value, StreamError> {
    match request.await {
        Err(StreamError::Api { error, .. }) if error.err_code == SUBJECTS_OVERLAP => {
            let conflicts = find_owners(js, wanted).await;
            Err(StreamError::SubjectOwnedByOtherStream { stream: wanted.name.clone(), conflicts })
        }
        other => other,
    }
}

/// For each wanted subject, the other streams that capture it. Best effort: a failed
/// lookup leaves that subject out rather than hiding the overlap error itself.
async fn find_owners(js: &Context, wanted: &StreamSettings) -> Vec<SubjectConflict> {
    let mut conflicts = Vec::new();
    for subject in &wanted.subjects {
        let body = json!({ "subject": subject });
        let Ok(reply) = api(js, &wanted.name, "look up", "STREAM.NAMES".into(), &body).await else {
            continue;
        };
        let owners = reply["streams"].as_array().into_iter().flatten().filter_map(Value::as_str);
        for owner in owners.filter(|owner| *owner != wanted.name) {
            conflicts.push(SubjectConflict { subject: subject.clone(), owner: owner.to_string() });
        }
    }
    conflicts
}

/// One JetStream API request with a JSON body; an `error` in the reply becomes
/// [`StreamError::Api`].
async fn api(
    js: &Context,
    stream: &str,
    action: &'static str,
    subject: String,
    body: &Value,
) -> Result<Value, StreamError> {
    let reply: Value =
        js.request(subject, body).await.map_err(|e| request_error(stream, action, &e))?;
    match reply.get("error") {
        Some(error) => Err(StreamError::Api {
            stream: stream.to_string(),
            action,
            error: ApiError {
                code: error["code"].as_u64().unwrap_or(0),
                err_code: error["err_code"].as_u64().unwrap_or(0),
                description: error["description"].as_str().unwrap_or("unknown error").into(),
            },
        }),
        None => Ok(reply),
    }
}

fn request_error(stream: &str, action: &'static str, error: &RequestError) -> StreamError {
    let detail = crate::connect::error_chain(error);
    match error.kind() {
        RequestErrorKind::NoResponders => {
            StreamError::JetStreamUnavailable { stream: stream.to_string(), detail }
        }
        _ => StreamError::Request { stream: stream.to_string(), action, detail },
    }
}

fn duplicate_window(config: &Value) -> Duration {
    Duration::from_nanos(config["duplicate_window"].as_u64().unwrap_or(0))
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The wanted subjects no current subject (wildcards included) already captures.
fn missing_subjects(current: &[String], wanted: &[String]) -> Vec<String> {
    let mut missing: Vec<String> = Vec::new();
    for subject in wanted {
        let covered = current.iter().chain(missing.iter()).any(|have| covers(have, subject));
        if !covered {
            missing.push(subject.clone());
        }
    }
    missing
}

/// Whether NATS subject pattern `pattern` matches every subject `subject` matches:
/// `*` takes one token, a trailing `>` one or more.
fn covers(pattern: &str, subject: &str) -> bool {
    let mut have = pattern.split('.');
    let mut want = subject.split('.');
    loop {
        match (have.next(), want.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(token)) if token != ">" => {}
            (Some(h), Some(w)) if h == w => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_literal_and_narrower_subjects() {
        assert!(covers("flows.raw.netflow", "flows.raw.netflow"));
        assert!(covers("flows.>", "flows.raw.netflow"));
        assert!(covers("flows.*.netflow", "flows.raw.netflow"));
        assert!(covers("flows.>", "flows.*"));
        assert!(covers("flows.>", "flows.>"));
        assert!(!covers("flows.*", "flows.raw.netflow"));
        assert!(!covers("flows.raw", "flows.raw.netflow"));
        assert!(!covers("flows.*", "flows.>"));
        assert!(!covers("flows.raw.netflow", "flows.raw.*"));
        assert!(!covers("flows.>", "flows"));
    }

    #[test]
    fn only_uncovered_subjects_are_added_once() {
        let current = vec!["flows.raw.netflow".to_string(), "logs.>".to_string()];
        let wanted: Vec<String> =
            ["flows.raw.netflow", "flows.raw.sflow", "logs.syslog", "flows.raw.sflow"]
                .map(String::from)
                .to_vec();
        assert_eq!(missing_subjects(&current, &wanted), vec!["flows.raw.sflow".to_string()]);
    }

    #[test]
    fn conflicts_name_subject_and_owner() {
        let err = StreamError::SubjectOwnedByOtherStream {
            stream: "events".into(),
            conflicts: vec![SubjectConflict {
                subject: "flows.raw.netflow".into(),
                owner: "flows".into(),
            }],
        };
        let text = err.to_string();
        assert!(text.contains("stream events"), "{text}");
        assert!(text.contains("subject flows.raw.netflow is already captured by stream flows"));
    }

    #[test]
    fn change_renders_for_logs() {
        let change = StreamChange::Updated {
            added_subjects: vec!["a".into(), "b".into()],
            replicas: Some((1, 3)),
        };
        assert_eq!(change.to_string(), "updated: added subjects a, b replicas 1 -> 3");
    }
}
