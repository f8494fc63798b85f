//! The server-wide cap on open streams, across all API versions.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering::Relaxed},
};

#[derive(Clone)]
pub struct StreamBudget {
    max: usize,
    open: Arc<AtomicUsize>,
}

/// One open stream's share of the budget, returned on drop.
pub struct StreamPermit {
    open: Arc<AtomicUsize>,
}

impl StreamBudget {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::default(),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    pub fn try_acquire(&self) -> Option<StreamPermit> {
        self.open
            .fetch_update(Relaxed, Relaxed, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| StreamPermit {
                open: self.open.clone(),
            })
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_returns() {
        let budget = StreamBudget::new(2);
        let a = budget.try_acquire().unwrap();
        let _b = budget.try_acquire().unwrap();
        assert!(budget.try_acquire().is_none());
        drop(a);
        assert!(budget.try_acquire().is_some());
        assert_eq!(budget.open(), 1);
    }
}
