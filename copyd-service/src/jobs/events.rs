//! The job-event stream: one broadcast channel per job manager. Every
//! job's runner sends its state changes, progress samples and its end here;
//! the bus (signals, properties) and the metrics each subscribe, so neither
//! knows of the other and a new listener needs no change to the jobs.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::JobEvent;

/// How many updates a slow subscriber may fall behind before it misses
/// some (it is then told how many, and catches up from the job's status).
/// At 4 updates a second per running job, minutes of slack.
pub const CAPACITY: usize = 4096;

/// One job's event, as the stream carries it.
#[derive(Debug, Clone)]
pub struct JobUpdate {
    pub job_id: Arc<str>,
    pub event: JobEvent,
}

/// Where one job sends its events: the manager's stream, stamped with the
/// job's id.
#[derive(Clone)]
pub struct EventSink {
    job_id: Arc<str>,
    stream: broadcast::Sender<JobUpdate>,
}

impl EventSink {
    pub fn new(job_id: &str, stream: broadcast::Sender<JobUpdate>) -> EventSink {
        EventSink {
            job_id: job_id.into(),
            stream,
        }
    }

    /// Sends `event` to every subscriber. No subscriber is no error: a
    /// job runs whether anyone listens or not.
    pub fn send(&self, event: JobEvent) {
        let _ = self.stream.send(JobUpdate {
            job_id: self.job_id.clone(),
            event,
        });
    }
}
