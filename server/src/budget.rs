//! The caps on open streams across all API versions: one for the whole server, and one per
//! client so that a single client can't take every slot.

use dashmap::DashMap;
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering::Relaxed},
};

use crate::client::ClientKey;

#[derive(Clone)]
pub struct StreamBudget(Arc<Budget>);

struct Budget {
    max: usize,
    open: AtomicUsize,
    max_per_client: usize,
    /// Open streams by client. A client with none has no entry, so the map holds at most as
    /// many entries as there are open streams.
    clients: DashMap<ClientKey, usize>,
    /// Seconds a refused client is told to wait (`Retry-After`).
    retry_after: u64,
}

/// Why no stream could be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// The server has its limit of streams open.
    Server { max: usize },
    /// The client has its limit of streams open.
    Client { max: usize, retry_after: u64 },
}

/// One open stream's share of the budget, of the server's and of its client's; both are
/// returned on drop.
pub struct StreamPermit {
    budget: Arc<Budget>,
    client: ClientKey,
}

impl StreamBudget {
    /// `max` streams in all, `max_per_client` for each client (both at least 1); a client
    /// refused is told to come back in `retry_after` seconds.
    pub fn new(max: usize, max_per_client: usize, retry_after: u64) -> Self {
        Self(Arc::new(Budget {
            max,
            open: AtomicUsize::new(0),
            max_per_client: max_per_client.max(1),
            clients: DashMap::new(),
            retry_after,
        }))
    }

    pub fn max(&self) -> usize {
        self.0.max
    }

    pub fn open(&self) -> usize {
        self.0.open.load(Relaxed)
    }

    /// Clients with at least one stream open.
    pub fn clients(&self) -> usize {
        self.0.clients.len()
    }

    /// Takes a share for a stream of `client`: its own first, so that a client over its limit
    /// hears so even while the server is full.
    pub fn try_acquire(&self, client: ClientKey) -> Result<StreamPermit, Full> {
        let budget = &self.0;
        {
            // `max_per_client` is at least 1, so a refused client already has an entry: none
            // is left at 0.
            let mut open = budget.clients.entry(client).or_insert(0);
            if *open >= budget.max_per_client {
                return Err(Full::Client {
                    max: budget.max_per_client,
                    retry_after: budget.retry_after,
                });
            }
            *open += 1;
        }
        let server = budget
            .open
            .fetch_update(Relaxed, Relaxed, |n| (n < budget.max).then_some(n + 1));
        if server.is_err() {
            budget.release_client(client);
            return Err(Full::Server { max: budget.max });
        }
        Ok(StreamPermit {
            budget: self.0.clone(),
            client,
        })
    }
}

impl Budget {
    fn release_client(&self, client: ClientKey) {
        self.clients.remove_if_mut(&client, |_, open| {
            *open -= 1;
            *open == 0
        });
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.budget.open.fetch_sub(1, Relaxed);
        self.budget.release_client(self.client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientKey;
    use std::net::Ipv4Addr;

    fn client(n: u8) -> ClientKey {
        ClientKey::V4(Ipv4Addr::new(192, 0, 2, n))
    }

    #[test]
    fn caps_and_returns() {
        let budget = StreamBudget::new(2, 10, 1);
        let a = budget.try_acquire(client(1)).unwrap();
        let _b = budget.try_acquire(client(2)).unwrap();
        assert_eq!(
            budget.try_acquire(client(3)).err(),
            Some(Full::Server { max: 2 })
        );
        drop(a);
        assert!(budget.try_acquire(client(3)).is_ok());
        assert_eq!(budget.open(), 1);
        // The refused client took nothing: only client 2 is left.
        assert_eq!(budget.clients(), 1);
    }

    #[test]
    fn each_client_has_its_own_cap() {
        let budget = StreamBudget::new(100, 2, 7);
        let a = budget.try_acquire(client(1)).unwrap();
        let b = budget.try_acquire(client(1)).unwrap();
        assert_eq!(
            budget.try_acquire(client(1)).err(),
            Some(Full::Client {
                max: 2,
                retry_after: 7
            })
        );
        let c = budget.try_acquire(client(2)).unwrap();
        assert_eq!((budget.open(), budget.clients()), (3, 2));
        drop(a);
        let a = budget.try_acquire(client(1)).unwrap();
        // Entries go once their client's last stream does: the map does not leak.
        drop((a, b, c));
        assert_eq!((budget.open(), budget.clients()), (0, 0));
    }

    #[test]
    fn a_client_over_its_cap_hears_so_while_the_server_is_full() {
        let budget = StreamBudget::new(1, 1, 1);
        let _a = budget.try_acquire(client(1)).unwrap();
        assert!(matches!(
            budget.try_acquire(client(1)),
            Err(Full::Client { .. })
        ));
        assert!(matches!(
            budget.try_acquire(client(2)),
            Err(Full::Server { .. })
        ));
        assert_eq!((budget.open(), budget.clients()), (1, 1));
    }

    #[test]
    fn concurrent_cycles_leave_nothing_behind() {
        let budget = StreamBudget::new(50, 3, 1);
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let budget = budget.clone();
                s.spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..20_000u32 {
                        if let Ok(p) = budget.try_acquire(client((i % 5) as u8 + t)) {
                            held.push(p);
                        }
                        if held.len() > 4 {
                            held.remove(0);
                        }
                    }
                });
            }
        });
        assert_eq!((budget.open(), budget.clients()), (0, 0));
    }
}
