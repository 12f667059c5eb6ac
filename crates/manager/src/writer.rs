//! The group-commit writer: small writes agents cause all at once (1,000 agents acking a
//! revision, or reconnecting after a manager restart) are committed in groups by one thread:
//! one transaction and one sync for everything waiting, not one each.

use crate::error::ManagerError;
use crate::store::{AckRow, Event, Store};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Most writes committed in one transaction.
const GROUP_MAX: usize = 4096;

enum Pending {
    Ack(AckRow, oneshot::Sender<Result<(), ManagerError>>),
    Event(Event),
    Seen(String),
}

/// The queue into the group-commit thread (which ends when the writer is dropped).
pub struct Writer {
    tx: Mutex<mpsc::Sender<Pending>>,
}

impl Writer {
    pub fn start(store: Arc<dyn Store>) -> Result<Self, ManagerError> {
        let (tx, rx) = mpsc::channel::<Pending>();
        std::thread::Builder::new()
            .name("group-writer".into())
            .spawn(move || run(store, rx))
            .map_err(crate::error::io_err("starting the group writer"))?;
        Ok(Self { tx: Mutex::new(tx) })
    }

    fn send(&self, p: Pending) -> Result<(), ManagerError> {
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(p)
            .map_err(|_| ManagerError::ShuttingDown)
    }

    /// Records an agent's ack and waits for its commit.
    pub async fn ack(&self, row: AckRow) -> Result<(), ManagerError> {
        let (done, wait) = oneshot::channel();
        self.send(Pending::Ack(row, done))?;
        wait.await.map_err(|_| ManagerError::ShuttingDown)?
    }

    /// Records an event without waiting for its commit.
    pub fn event_later(&self, actor: &str, action: &str, detail: &str) {
        let _ = self.send(Pending::Event(Event {
            at_ms: 0,
            actor: actor.into(),
            action: action.into(),
            detail: detail.into(),
        }));
    }

    /// Marks a node seen now, without waiting for the commit.
    pub fn seen_later(&self, node: &str) {
        let _ = self.send(Pending::Seen(node.to_string()));
    }
}

fn run(store: Arc<dyn Store>, rx: mpsc::Receiver<Pending>) {
    while let Ok(first) = rx.recv() {
        let (mut acks, mut waiters, mut events, mut seen) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut next = Some(first);
        while let Some(p) = next.take() {
            match p {
                Pending::Ack(a, w) => {
                    acks.push(a);
                    waiters.push(w);
                }
                Pending::Event(e) => events.push(e),
                Pending::Seen(n) => seen.push(n),
            }
            if acks.len() + events.len() + seen.len() < GROUP_MAX {
                next = rx.try_recv().ok();
            }
        }
        match store.record_many(&acks, &events, &seen) {
            Ok(results) => {
                for (done, r) in waiters.into_iter().zip(results) {
                    let _ = done.send(r.map_err(ManagerError::from));
                }
            }
            Err(e) => {
                // Events and marks have no one waiting: the log is where they fail.
                tracing::error!(
                    acks = acks.len(),
                    events = events.len(),
                    marks = seen.len(),
                    "recording agent writes failed: {e}"
                );
                let msg = e.to_string();
                for done in waiters {
                    let _ = done.send(Err(ManagerError::Unavailable(format!(
                        "recording the ack: {msg}"
                    ))));
                }
            }
        }
    }
}
