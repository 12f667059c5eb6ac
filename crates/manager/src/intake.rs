//! Where flow records wait between intake and the per-minute history: summed by connection,
//! with the revisions whose labels attribute them, and the queue alerts go out by.

use crate::history;
use crate::state::Published;
use crate::store::Alert;
use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};

/// Flow records waiting for the per-minute history, the revisions that attribute them, and
/// where alerts go.
#[derive(Default)]
pub struct FlowIntake {
    buffer: Mutex<Buffered>,
    webhooks: Mutex<Option<mpsc::SyncSender<Alert>>>,
}

#[derive(Default)]
pub struct Buffered {
    pub records: history::Buffer,
    pub revisions: HashMap<u64, Arc<Published>>,
}

impl FlowIntake {
    pub fn buffer(&self) -> std::sync::MutexGuard<'_, Buffered> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn webhooks(&self) -> std::sync::MutexGuard<'_, Option<mpsc::SyncSender<Alert>>> {
        self.webhooks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Alerts are handed to `tx` (a bounded queue; what does not fit is counted).
    pub fn set_webhooks(&self, tx: mpsc::SyncSender<Alert>) {
        *self.webhooks.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    }
}
