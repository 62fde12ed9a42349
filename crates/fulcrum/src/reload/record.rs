//! What the reloads did, for the admin API (and the metrics once they exist): how many were
//! applied and refused, the last one's time, trigger and outcome, and the binary upgrade
//! generation. Also the channel through which `POST /api/reload` asks `fulcrum run`'s main
//! thread — the owner of the running app — to reload, and waits for its answer.

use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::ReloadError;
use fulcrum_core::reload::Change;

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// SIGHUP (`systemctl reload`, `kill -HUP`).
    Signal,
    /// `POST /api/reload` (what `fulcrum reload` sends).
    Api,
}

/// A reload's answer as the admin API gives it.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub applied: bool,
    /// What changed, one sentence each ("pool app: backend 10.0.0.5:80 added (weight 1)").
    pub changes: Vec<String>,
    /// Why nothing changed: each error with its path, or each change that needs a restart.
    pub errors: Vec<String>,
}

impl Outcome {
    pub fn of(result: &Result<Vec<Change>, ReloadError>) -> Self {
        match result {
            Ok(changes) => Self {
                applied: true,
                changes: changes.iter().map(ToString::to_string).collect(),
                errors: Vec::new(),
            },
            Err(ReloadError::Invalid(errors)) => Self {
                applied: false,
                changes: Vec::new(),
                errors: errors.clone(),
            },
            Err(ReloadError::NotInPlace(changes)) => Self {
                applied: false,
                changes: Vec::new(),
                errors: changes
                    .iter()
                    .map(|c| {
                        format!("{c}: not applied in place by this version (restart to apply)")
                    })
                    .collect(),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Last {
    /// Unix seconds.
    at: f64,
    trigger: Trigger,
    #[serde(flatten)]
    outcome: Outcome,
}

#[derive(Debug, Default, Serialize)]
struct Counts {
    ok: u64,
    failed: u64,
    last_success_unix: f64,
    last: Option<Last>,
}

/// The reload figures the metrics show.
#[derive(Debug, Clone, Copy)]
pub struct ReloadFigures {
    pub ok: u64,
    pub failed: u64,
    pub last_success_unix: f64,
    pub generation: u64,
}

/// The reload counters, shared by `fulcrum run`'s main thread and the admin API.
#[derive(Debug, Default)]
pub struct ReloadRecord {
    counts: Mutex<Counts>,
    /// 0 for a process started fresh; each binary upgrade's new process is one more.
    generation: u64,
}

impl ReloadRecord {
    pub fn new(generation: u64) -> Self {
        Self {
            counts: Mutex::default(),
            generation,
        }
    }

    pub fn record(&self, trigger: Trigger, outcome: &Outcome) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if outcome.applied {
            counts.ok += 1;
            counts.last_success_unix = at;
        } else {
            counts.failed += 1;
        }
        counts.last = Some(Last {
            at,
            trigger,
            outcome: outcome.clone(),
        });
    }

    /// For the metrics: reloads applied, refused, when the last applied one was (Unix
    /// seconds, 0 before any), and the upgrade generation.
    pub fn figures(&self) -> ReloadFigures {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        ReloadFigures {
            ok: counts.ok,
            failed: counts.failed,
            last_success_unix: counts.last_success_unix,
            generation: self.generation,
        }
    }

    /// `GET /api/reload`.
    pub fn status(&self) -> serde_json::Value {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::json!({
            "reloads_ok": counts.ok,
            "reloads_failed": counts.failed,
            "last": counts.last,
            "upgrade_generation": self.generation,
            "pid": std::process::id(),
        })
    }
}

/// One `POST /api/reload`, waiting for its answer.
#[derive(Debug)]
pub struct ReloadRequest {
    pub reply: oneshot::Sender<Outcome>,
}

/// The admin API's side of the channel to the reloading thread.
#[derive(Debug, Clone)]
pub struct Reloader {
    requests: mpsc::UnboundedSender<ReloadRequest>,
}

impl Reloader {
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<ReloadRequest>) {
        let (requests, received) = mpsc::unbounded_channel();
        (Self { requests }, received)
    }

    /// Asks for a reload and waits for its outcome; `None` when nothing serves reloads (an
    /// embedded app whose owner does not read the requests).
    pub async fn reload(&self) -> Option<Outcome> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(ReloadRequest { reply }).ok()?;
        answer.await.ok()
    }
}
