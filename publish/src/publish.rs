//! Publishing batches with delivery guarantees.
//!
//! A batch is sent with many acks in flight (bounded by `max_in_flight` across the whole
//! connection). Messages whose ack did not come back — timed out, connection lost, no
//! stream listening — are re-sent with the same `Nats-Msg-Id` after a backoff, so
//! JetStream stores each at most once, for as long as a re-send still lands inside the
//! stream's duplicate window. What is finally given up is counted by reason: every
//! message of a batch ends up acked, a duplicate, or given up — never unaccounted.

use std::collections::BTreeMap;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::client::PublishErrorKind as ClientPublishErrorKind;
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::response::Response;
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{HeaderMap, Message, StatusCode, Subject, SubjectError, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use thiserror::Error;
use tokio::sync::Mutex;
use tracing::{debug, error, info, warn};

use crate::connect::{ConnectError, ConnectionState, JetStreamConnection, wait_connected};
use crate::settings::{Backoff, JetStreamSettings, StreamSettings};
use crate::stream::{EnsureOutcome, StreamChange, StreamError, ensure_stream};

/// How many times start-up asks a JetStream that does not answer before calling it not
/// enabled: a server just started may take a moment to bring JetStream up.
pub const JETSTREAM_WARMUP_ATTEMPTS: u32 = 6;

/// One message to publish: an opaque payload and its dedupe id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// Unique per message and identical on every re-send (see
    /// [`MessageIdGenerator`](crate::MessageIdGenerator)).
    pub msg_id: String,
    pub payload: Bytes,
}

/// Why a message was finally given up; labels for the `flows_dropped` counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GiveUpReason {
    /// No ack within `publish_timeout`, on every attempt inside the duplicate window.
    AckTimeout,
    /// No stream listened on the subject (stream deleted, JetStream down), and
    /// re-creating the stream did not help in time.
    NoResponders,
    /// The connection dropped before the ack arrived, on every attempt.
    ConnectionClosed,
    /// Larger than the server's `max_payload` or the stream's `max_msg_size`.
    MaxPayload,
    /// The stream is at its limits and refuses new messages (discard policy `new`).
    StreamFull,
    /// JetStream answered "temporarily unavailable" (e.g. no quorum) every time.
    Unavailable,
    /// Any other refusal of JetStream (sealed stream, storage failure, ...).
    Rejected,
}

impl GiveUpReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            GiveUpReason::AckTimeout => "ack_timeout",
            GiveUpReason::NoResponders => "no_responders",
            GiveUpReason::ConnectionClosed => "connection_closed",
            GiveUpReason::MaxPayload => "max_payload",
            GiveUpReason::StreamFull => "stream_full",
            GiveUpReason::Unavailable => "jetstream_unavailable",
            GiveUpReason::Rejected => "rejected",
        }
    }
}

impl std::fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of a batch. `acked + duplicates + given_up_total()` is the batch size.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Stored by JetStream.
    pub acked: u64,
    /// Acked as already stored (`duplicate: true`): an earlier attempt had made it.
    pub duplicates: u64,
    /// Re-sends made, over all rounds.
    pub retries: u64,
    /// Messages given up, by reason.
    pub given_up: BTreeMap<GiveUpReason, u64>,
}

impl BatchOutcome {
    /// Messages the stream holds: newly stored or already there.
    pub fn delivered(&self) -> u64 {
        self.acked + self.duplicates
    }

    pub fn given_up_total(&self) -> u64 {
        self.given_up.values().sum()
    }

    fn give_up(&mut self, reason: GiveUpReason, count: u64) {
        *self.given_up.entry(reason).or_default() += count;
    }
}

/// Why the publisher could not start.
#[derive(Debug, Error)]
pub enum PublisherError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Stream(#[from] StreamError),
}

/// The JetStream transport: one connection, one stream, any number of subjects. Share it
/// behind an `Arc`; batches of different subjects publish concurrently.
#[derive(Debug)]
pub struct JetStreamPublisher {
    connection: JetStreamConnection,
    stream: StreamSettings,
    publish_timeout: Duration,
    /// Publishes awaiting their ack at most, over the whole connection.
    max_in_flight: usize,
    retry_backoff: Backoff,
    /// Reply subscriptions not in use (see [`ReplyInbox`]).
    inboxes: std::sync::Mutex<Vec<ReplyInbox>>,
    /// One stream repair at a time when several batches find it missing.
    ensure_lock: Mutex<()>,
    /// The stream's duplicate window as last seen, in nanoseconds.
    duplicate_window_ns: AtomicU64,
}

impl JetStreamPublisher {
    /// Connects (retrying per the settings) and brings the stream into shape.
    pub async fn connect(settings: JetStreamSettings) -> Result<Self, PublisherError> {
        let connection = JetStreamConnection::connect(&settings).await?;
        let publisher = JetStreamPublisher {
            connection,
            stream: settings.stream,
            publish_timeout: settings.publish_timeout,
            max_in_flight: settings.max_in_flight,
            inboxes: std::sync::Mutex::new(Vec::new()),
            retry_backoff: settings.retry_backoff,
            ensure_lock: Mutex::new(()),
            duplicate_window_ns: AtomicU64::new(0),
        };
        let outcome = publisher.ensure_stream_at_startup(&settings.connect_backoff).await?;
        info!(
            stream = %publisher.stream.name,
            servers = %publisher.connection.servers(),
            change = %outcome.change,
            duplicate_window = ?outcome.duplicate_window,
            "JetStream stream ready"
        );
        Ok(publisher)
    }

    /// `ensure_stream` for start-up: a server that is still starting (request timeouts,
    /// "temporarily unavailable", JetStream not answering yet) is waited for with
    /// `backoff`; JetStream that stays silent for [`JETSTREAM_WARMUP_ATTEMPTS`] attempts
    /// is reported as not enabled, and every other refusal at once.
    async fn ensure_stream_at_startup(
        &self,
        backoff: &Backoff,
    ) -> Result<EnsureOutcome, StreamError> {
        let mut attempt: u32 = 0;
        loop {
            let error = match self.ensure_stream().await {
                Ok(outcome) => return Ok(outcome),
                Err(error) => error,
            };
            let retry = match &error {
                StreamError::JetStreamUnavailable { .. } => attempt + 1 < JETSTREAM_WARMUP_ATTEMPTS,
                other => other.is_transient(),
            };
            if !retry {
                return Err(error);
            }
            let delay = backoff.delay(attempt);
            attempt += 1;
            warn!(attempt, %error, "JetStream not ready yet, retrying in {delay:?}");
            tokio::time::sleep(delay).await;
        }
    }

    /// Creates the stream or reconciles its subjects and replicas; remembers its duplicate
    /// window, which bounds retries.
    pub async fn ensure_stream(&self) -> Result<EnsureOutcome, StreamError> {
        let _one_at_a_time = self.ensure_lock.lock().await;
        let outcome = ensure_stream(self.connection.context(), &self.stream).await?;
        let window = u64::try_from(outcome.duplicate_window.as_nanos()).unwrap_or(u64::MAX);
        self.duplicate_window_ns.store(window, Ordering::Relaxed);
        if outcome.duplicate_window <= self.publish_timeout {
            warn!(
                stream = %self.stream.name,
                duplicate_window = ?outcome.duplicate_window,
                publish_timeout = ?self.publish_timeout,
                "the stream's duplicate window is not longer than the publish timeout: \
                 unacknowledged messages will not be retried"
            );
        }
        Ok(outcome)
    }

    pub fn connection(&self) -> &JetStreamConnection {
        &self.connection
    }

    pub fn is_connected(&self) -> bool {
        self.connection.is_connected()
    }

    pub fn stream_name(&self) -> &str {
        &self.stream.name
    }

    /// How long after a batch starts its messages may still be re-sent: the duplicate
    /// window less one publish timeout, so a re-send reaches the server while JetStream
    /// still remembers the first copy's id.
    pub fn retry_horizon(&self) -> Duration {
        let window = Duration::from_nanos(self.duplicate_window_ns.load(Ordering::Relaxed));
        window.saturating_sub(self.publish_timeout)
    }

    /// Publishes every message on `subject`, retrying unacknowledged ones with their same
    /// `Nats-Msg-Id`, and reports what became of each. Resolves when every message is
    /// acked or given up (at most about one retry horizon).
    pub async fn publish_batch(
        &self,
        subject: &str,
        messages: Vec<OutboundMessage>,
    ) -> BatchOutcome {
        let deadline = Instant::now() + self.retry_horizon();
        let subject = Subject::from(subject);
        let mut outcome = BatchOutcome::default();
        let mut pending: Vec<usize> = (0..messages.len()).collect();
        let mut round: u32 = 0;
        while !pending.is_empty() {
            let failures = self.send_round(&subject, &messages, &pending, &mut outcome).await;
            let retry = give_up_permanent(failures, &mut outcome);
            if retry.is_empty() {
                break;
            }
            let delay = self.retry_backoff.delay(round);
            if Instant::now() + delay >= deadline {
                give_up_all(&retry, &mut outcome);
                break;
            }
            log_retry(&subject, &retry, delay);
            self.prepare_retry(&retry, delay, deadline).await;
            if Instant::now() >= deadline {
                give_up_all(&retry, &mut outcome);
                break;
            }
            outcome.retries += retry.len() as u64;
            pending = retry.iter().map(|(index, _)| *index).collect();
            round += 1;
        }
        log_outcome(&subject, messages.len(), &outcome);
        outcome
    }

    /// Waits out the backoff and, if needed, the reconnect, and repairs the stream when
    /// nothing was listening on the subject.
    async fn prepare_retry(&self, retry: &[(usize, Failure)], delay: Duration, deadline: Instant) {
        tokio::time::sleep(delay).await;
        let mut state = self.connection.state();
        if *state.borrow() != ConnectionState::Connected {
            let left = deadline.saturating_duration_since(Instant::now());
            wait_connected(&mut state, left).await;
        }
        if retry.iter().any(|(_, failure)| failure.reason == GiveUpReason::NoResponders) {
            self.repair_stream().await;
        }
    }

    /// Re-runs `ensure_stream` after "no responders": the stream may have been deleted, or
    /// the server restarted with an empty store.
    async fn repair_stream(&self) {
        match self.ensure_stream().await {
            Ok(EnsureOutcome { change: StreamChange::Unchanged, .. }) => {}
            Ok(outcome) => warn!(
                stream = %self.stream.name,
                change = %outcome.change,
                "JetStream stream was missing or changed and has been restored"
            ),
            Err(e) => warn!(
                stream = %self.stream.name,
                error = %e,
                "cannot restore the JetStream stream yet; will retry"
            ),
        }
    }

    /// Sends the `pending` messages with acks in flight and waits for every ack. Returns
    /// the messages that failed, with why. At most `max_in_flight` messages of the whole
    /// connection await their ack at a time: larger rounds go in slices.
    async fn send_round(
        &self,
        subject: &Subject,
        messages: &[OutboundMessage],
        pending: &[usize],
        outcome: &mut BatchOutcome,
    ) -> Vec<(usize, Failure)> {
        let in_flight = self.connection.in_flight();
        let slice_len = self.max_in_flight.max(1);
        let mut failures = Vec::new();
        let mut slices = pending.chunks(slice_len);
        while let Some(slice) = slices.next() {
            let permits = u32::try_from(slice.len()).unwrap_or(u32::MAX);
            let Ok(_permits) = in_flight.acquire_many(permits).await else {
                break;
            };
            let connection_lost =
                self.send_slice(subject, messages, slice, outcome, &mut failures).await;
            if let Some(failure) = connection_lost {
                // The client is not getting messages out: every further send would wait
                // its own timeout. Retry them all next round.
                failures.extend(slices.by_ref().flatten().map(|rest| (*rest, failure)));
            }
        }
        failures
    }

    /// Publishes `slice` as core NATS publishes whose reply subject is a pooled reply
    /// subscription ([`ReplyInbox`]), and collects JetStream's ack or error reply to
    /// each, read as async-nats reads them. One subscription and one deadline for the
    /// slice instead of async-nats' reply channel, timer and permit per message: that
    /// bookkeeping cost more CPU than the message. Returns the failure that cut the
    /// sending short, when the connection did.
    async fn send_slice(
        &self,
        subject: &Subject,
        messages: &[OutboundMessage],
        slice: &[usize],
        outcome: &mut BatchOutcome,
        failures: &mut Vec<(usize, Failure)>,
    ) -> Option<Failure> {
        let client = self.connection.client();
        let Some(mut inbox) = self.take_inbox().await else {
            let failure = Failure::retryable(GiveUpReason::ConnectionClosed);
            failures.extend(slice.iter().map(|index| (*index, failure)));
            return None;
        };
        let tag = inbox.next_tag();
        let replies = &mut inbox.replies;
        let mut awaiting = AckWaits::new(messages.len());
        let mut cut_short = None;
        let mut queue = slice.iter().copied();
        while let Some(index) = queue.next() {
            let message = &messages[index];
            let mut headers = HeaderMap::new();
            headers.insert(NATS_MESSAGE_ID, message.msg_id.as_str());
            let reply = format!("{tag}.{index}");
            let publish = client.publish_with_reply_and_headers(
                subject.clone(),
                reply,
                headers,
                message.payload.clone(),
            );
            let mut send = std::pin::pin!(tokio::time::timeout(self.publish_timeout, publish));
            // While the send waits for room in the client's queue, keep taking acks.
            let sent = loop {
                tokio::select! {
                    biased;
                    sent = &mut send => break sent,
                    Some(reply) = replies.next() => awaiting.settle(&reply, &tag, outcome, failures),
                }
            };
            let failure = match sent {
                Ok(Ok(())) => {
                    awaiting.expect(index);
                    continue;
                }
                Ok(Err(error))
                    if matches!(error.kind(), ClientPublishErrorKind::MaxPayloadExceeded) =>
                {
                    failures.push((index, Failure::permanent(GiveUpReason::MaxPayload)));
                    continue;
                }
                Ok(Err(error))
                    if matches!(error.kind(), ClientPublishErrorKind::InvalidSubject) =>
                {
                    failures.push((index, Failure::permanent(GiveUpReason::Rejected)));
                    continue;
                }
                Ok(Err(_)) => Failure::retryable(GiveUpReason::ConnectionClosed),
                Err(_elapsed) => Failure::retryable(GiveUpReason::AckTimeout),
            };
            failures.push((index, failure));
            failures.extend(queue.by_ref().map(|rest| (rest, failure)));
            cut_short = Some(failure);
        }
        let deadline = tokio::time::Instant::now() + self.publish_timeout;
        while awaiting.count() > 0 {
            match tokio::time::timeout_at(deadline, replies.next()).await {
                Ok(Some(reply)) => awaiting.settle(&reply, &tag, outcome, failures),
                Ok(None) => {
                    inbox.ended = true;
                    awaiting.give_up(PublishErrorKind::BrokenPipe, outcome, failures);
                }
                Err(_elapsed) => awaiting.give_up(PublishErrorKind::TimedOut, outcome, failures),
            }
        }
        self.return_inbox(inbox);
        cut_short
    }

    /// A reply inbox from the pool, or a new subscription when every one is in use.
    async fn take_inbox(&self) -> Option<ReplyInbox> {
        let pooled = self.inboxes.lock().unwrap_or_else(PoisonError::into_inner).pop();
        if pooled.is_some() {
            return pooled;
        }
        let client = self.connection.client();
        let prefix = client.new_inbox();
        let replies = client.subscribe(format!("{prefix}.>")).await.ok()?;
        Some(ReplyInbox { prefix, replies, uses: 0, ended: false })
    }

    fn return_inbox(&self, inbox: ReplyInbox) {
        if !inbox.ended {
            self.inboxes.lock().unwrap_or_else(PoisonError::into_inner).push(inbox);
        }
    }

    /// Drains the connection: flushes what is buffered and closes it.
    pub async fn close(&self) {
        if let Err(e) = self.connection.client().drain().await {
            warn!(error = %e, "draining the NATS connection failed");
        }
    }
}

/// A subscription for publish replies, kept from slice to slice: subscribing once per
/// slice would make the server rework its subject cache twice a slice. Each use tags
/// its reply subjects (`<prefix>.<use>.<index>`), so a late reply to an earlier use is
/// told apart and ignored.
#[derive(Debug)]
struct ReplyInbox {
    prefix: String,
    replies: Subscriber,
    uses: u64,
    /// The subscription ended (the client is gone): not to be used again.
    ended: bool,
}

impl ReplyInbox {
    fn next_tag(&mut self) -> String {
        self.uses += 1;
        format!("{}.{}", self.prefix, self.uses)
    }
}

/// The messages of a slice sent and not yet answered, by index in the batch.
struct AckWaits {
    waiting: Vec<bool>,
    count: usize,
}

impl AckWaits {
    fn new(messages: usize) -> Self {
        Self { waiting: vec![false; messages], count: 0 }
    }

    fn count(&self) -> usize {
        self.count
    }

    fn expect(&mut self, index: usize) {
        if let Some(slot) = self.waiting.get_mut(index).filter(|waiting| !**waiting) {
            *slot = true;
            self.count += 1;
        }
    }

    /// Takes JetStream's reply to the message its subject (`<tag>.<index>`) names;
    /// replies to nothing awaited (or to an earlier use of the inbox) are ignored.
    fn settle(
        &mut self,
        reply: &Message,
        tag: &str,
        outcome: &mut BatchOutcome,
        failures: &mut Vec<(usize, Failure)>,
    ) {
        let index = reply
            .subject
            .strip_prefix(tag)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|index| index.parse::<usize>().ok());
        let Some(index) = index else {
            return;
        };
        if let Some(slot) = self.waiting.get_mut(index).filter(|waiting| **waiting) {
            *slot = false;
            self.count -= 1;
            record(index, publish_reply(reply), outcome, failures);
        }
    }

    /// Every message still awaited failed with `kind` (no reply in time, or the
    /// subscription ended with the client).
    fn give_up(
        &mut self,
        kind: PublishErrorKind,
        outcome: &mut BatchOutcome,
        failures: &mut Vec<(usize, Failure)>,
    ) {
        for (index, waiting) in self.waiting.iter_mut().enumerate() {
            if std::mem::take(waiting) {
                record(index, Err(PublishError::new(kind)), outcome, failures);
            }
        }
        self.count = 0;
    }
}

/// What JetStream's reply to one publish says, read as async-nats reads a publish ack.
fn publish_reply(reply: &Message) -> Result<PublishAck, PublishError> {
    if reply.status == Some(StatusCode::NO_RESPONDERS) {
        return Err(PublishError::new(PublishErrorKind::StreamNotFound));
    }
    let response = serde_json::from_slice(reply.payload.as_ref())
        .map_err(|error| PublishError::with_source(PublishErrorKind::Other, error))?;
    match response {
        Response::Ok(ack) => Ok(ack),
        Response::Err { error } => {
            let kind = match error.error_code() {
                ErrorCode::STREAM_WRONG_LAST_MESSAGE_ID => PublishErrorKind::WrongLastMessageId,
                ErrorCode::STREAM_WRONG_LAST_SEQUENCE => PublishErrorKind::WrongLastSequence,
                _ => PublishErrorKind::Other,
            };
            Err(PublishError::with_source(kind, error))
        }
    }
}

fn record(
    index: usize,
    result: Result<PublishAck, PublishError>,
    outcome: &mut BatchOutcome,
    failures: &mut Vec<(usize, Failure)>,
) {
    match result {
        Ok(ack) if ack.duplicate => outcome.duplicates += 1,
        Ok(_) => outcome.acked += 1,
        Err(error) => {
            debug!(error = %crate::connect::error_chain(&error), "publish not acknowledged");
            failures.push((index, Failure::of(&error)));
        }
    }
}

/// Counts the failures no retry can fix as given up; returns the rest.
fn give_up_permanent(
    failures: Vec<(usize, Failure)>,
    outcome: &mut BatchOutcome,
) -> Vec<(usize, Failure)> {
    let (retry, permanent): (Vec<_>, Vec<_>) = failures.into_iter().partition(|(_, f)| f.retry);
    give_up_all(&permanent, outcome);
    retry
}

fn give_up_all(failures: &[(usize, Failure)], outcome: &mut BatchOutcome) {
    for (_, failure) in failures {
        outcome.give_up(failure.reason, 1);
    }
}

fn count_by_reason(failures: &[(usize, Failure)]) -> String {
    let mut counts: BTreeMap<GiveUpReason, u64> = BTreeMap::new();
    for (_, failure) in failures {
        *counts.entry(failure.reason).or_default() += 1;
    }
    counts.iter().map(|(reason, n)| format!("{reason}={n}")).collect::<Vec<_>>().join(" ")
}

fn log_retry(subject: &Subject, retry: &[(usize, Failure)], delay: Duration) {
    warn!(
        subject = %subject,
        messages = retry.len(),
        reasons = %count_by_reason(retry),
        "JetStream did not acknowledge messages; re-sending with the same Nats-Msg-Id in {delay:?}"
    );
}

fn log_outcome(subject: &Subject, size: usize, outcome: &BatchOutcome) {
    if outcome.given_up_total() > 0 {
        let reasons = outcome
            .given_up
            .iter()
            .map(|(reason, n)| format!("{reason}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        error!(
            subject = %subject,
            batch = size,
            delivered = outcome.delivered(),
            given_up = outcome.given_up_total(),
            reasons = %reasons,
            "JetStream publish gave up on messages"
        );
    } else {
        debug!(
            subject = %subject,
            batch = size,
            acked = outcome.acked,
            duplicates = outcome.duplicates,
            retries = outcome.retries,
            "batch published"
        );
    }
}

/// What went wrong with one publish, and whether a re-send can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Failure {
    reason: GiveUpReason,
    retry: bool,
}

impl Failure {
    fn retryable(reason: GiveUpReason) -> Self {
        Failure { reason, retry: true }
    }

    fn permanent(reason: GiveUpReason) -> Self {
        Failure { reason, retry: false }
    }

    fn of(error: &PublishError) -> Self {
        match error.kind() {
            PublishErrorKind::TimedOut | PublishErrorKind::MaxAckPending => {
                Failure::retryable(GiveUpReason::AckTimeout)
            }
            PublishErrorKind::BrokenPipe => Failure::retryable(GiveUpReason::ConnectionClosed),
            PublishErrorKind::StreamNotFound => Failure::retryable(GiveUpReason::NoResponders),
            PublishErrorKind::MaxPayloadExceeded => Failure::permanent(GiveUpReason::MaxPayload),
            PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
                Failure::permanent(GiveUpReason::Rejected)
            }
            PublishErrorKind::Other => Self::of_other(error),
        }
    }

    /// `Other` carries JetStream's error reply when there was one, or the client's
    /// refusal of the subject; with neither, the client could not hand the message to its
    /// connection.
    fn of_other(error: &PublishError) -> Self {
        let source = std::error::Error::source(error);
        if source.is_some_and(|s| s.is::<SubjectError>()) {
            return Failure::permanent(GiveUpReason::Rejected);
        }
        let Some(api) = source.and_then(|s| s.downcast_ref::<jetstream::Error>()) else {
            return Failure::retryable(GiveUpReason::ConnectionClosed);
        };
        let description = api.to_string();
        match api.error_code() {
            ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
            | ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM => {
                Failure::permanent(GiveUpReason::MaxPayload)
            }
            ErrorCode::STREAM_STORE_FAILED if description.contains("maximum") => {
                Failure::retryable(GiveUpReason::StreamFull)
            }
            ErrorCode::INSUFFICIENT_RESOURCES => Failure::retryable(GiveUpReason::StreamFull),
            _ if api.code() == 503 => Failure::retryable(GiveUpReason::Unavailable),
            ErrorCode::STREAM_STORE_FAILED => Failure::retryable(GiveUpReason::Rejected),
            _ => Failure::permanent(GiveUpReason::Rejected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(subject: &str, payload: &str, status: Option<StatusCode>) -> Message {
        Message {
            subject: Subject::from(subject),
            reply: None,
            payload: Bytes::from(payload.to_owned()),
            headers: None,
            status,
            description: None,
            length: payload.len(),
        }
    }

    #[test]
    fn replies_settle_only_the_messages_their_subject_names() {
        let (mut outcome, mut failures) = (BatchOutcome::default(), Vec::new());
        let mut awaiting = AckWaits::new(4);
        for index in [0, 1, 2] {
            awaiting.expect(index);
        }
        let ack = r#"{"stream":"events","seq":1}"#;
        // Another use of the inbox, an index not sent, a subject that is no index: ignored.
        for stale in ["_INBOX.x.1.0", "_INBOX.x.2.3", "_INBOX.x.2.zero", "_INBOX.x.20"] {
            awaiting.settle(&reply(stale, ack, None), "_INBOX.x.2", &mut outcome, &mut failures);
        }
        assert_eq!((awaiting.count(), outcome.acked), (3, 0));
        let duplicate = r#"{"stream":"events","seq":1,"duplicate":true}"#;
        awaiting.settle(
            &reply("_INBOX.x.2.0", ack, None),
            "_INBOX.x.2",
            &mut outcome,
            &mut failures,
        );
        awaiting.settle(
            &reply("_INBOX.x.2.0", ack, None),
            "_INBOX.x.2",
            &mut outcome,
            &mut failures,
        );
        awaiting.settle(
            &reply("_INBOX.x.2.1", duplicate, None),
            "_INBOX.x.2",
            &mut outcome,
            &mut failures,
        );
        let none = reply("_INBOX.x.2.2", "", Some(StatusCode::NO_RESPONDERS));
        awaiting.settle(&none, "_INBOX.x.2", &mut outcome, &mut failures);
        assert_eq!((outcome.acked, outcome.duplicates), (1, 1), "a second reply counts once");
        assert_eq!(failures, vec![(2, Failure::retryable(GiveUpReason::NoResponders))]);
        assert_eq!(awaiting.count(), 0);
    }

    #[test]
    fn jetstream_error_replies_keep_their_code() {
        let full =
            r#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}"#;
        let error = publish_reply(&reply("i.1.0", full, None)).expect_err("an error reply");
        assert_eq!(Failure::of(&error), Failure::retryable(GiveUpReason::StreamFull));
        let garbage = publish_reply(&reply("i.1.0", "not json", None)).expect_err("unreadable");
        assert_eq!(garbage.kind(), PublishErrorKind::Other);
    }

    #[test]
    fn messages_left_unanswered_fail_with_the_given_kind() {
        let (mut outcome, mut failures) = (BatchOutcome::default(), Vec::new());
        let mut awaiting = AckWaits::new(3);
        awaiting.expect(1);
        awaiting.expect(2);
        awaiting.give_up(PublishErrorKind::TimedOut, &mut outcome, &mut failures);
        let timeout = Failure::retryable(GiveUpReason::AckTimeout);
        assert_eq!(failures, vec![(1, timeout), (2, timeout)]);
        assert_eq!(awaiting.count(), 0);
    }

    #[test]
    fn publish_errors_map_to_reasons() {
        let of = |kind| Failure::of(&PublishError::new(kind));
        assert_eq!(of(PublishErrorKind::TimedOut), Failure::retryable(GiveUpReason::AckTimeout));
        assert_eq!(
            of(PublishErrorKind::StreamNotFound),
            Failure::retryable(GiveUpReason::NoResponders)
        );
        assert_eq!(
            of(PublishErrorKind::BrokenPipe),
            Failure::retryable(GiveUpReason::ConnectionClosed)
        );
        assert_eq!(
            of(PublishErrorKind::MaxPayloadExceeded),
            Failure::permanent(GiveUpReason::MaxPayload)
        );
        assert_eq!(of(PublishErrorKind::Other), Failure::retryable(GiveUpReason::ConnectionClosed));
        let bad_subject =
            PublishError::with_source(PublishErrorKind::Other, SubjectError::InvalidFormat);
        assert_eq!(Failure::of(&bad_subject), Failure::permanent(GiveUpReason::Rejected));
    }

    #[test]
    fn outcome_accounts_for_every_message() {
        let mut outcome = BatchOutcome { acked: 3, duplicates: 1, ..Default::default() };
        let retry = give_up_permanent(
            vec![
                (0, Failure::permanent(GiveUpReason::MaxPayload)),
                (1, Failure::retryable(GiveUpReason::AckTimeout)),
            ],
            &mut outcome,
        );
        assert_eq!(retry.len(), 1);
        give_up_all(&retry, &mut outcome);
        assert_eq!(outcome.delivered(), 4);
        assert_eq!(outcome.given_up_total(), 2);
        assert_eq!(outcome.given_up[&GiveUpReason::AckTimeout], 1);
        assert_eq!(count_by_reason(&retry), "ack_timeout=1");
    }
}
