//! Open agent streams by node, so that replacing or withdrawing a node's certificate closes its
//! streams at once (a stream is authenticated when it opens; without this it would keep
//! receiving every revision).

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

#[derive(Default)]
pub struct Sessions {
    /// Node → a counter bumped whenever its certificate is replaced or withdrawn.
    nodes: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Sessions {
    /// What a stream of `node` watches: it ends when the value changes.
    pub fn watch(&self, node: &str) -> watch::Receiver<u64> {
        let mut n = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        n.entry(node.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Ends every open stream of `node`.
    pub fn close(&self, node: &str) {
        let n = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = n.get(node) {
            tx.send_modify(|g| *g += 1);
        }
    }
}
