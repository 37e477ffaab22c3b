//! kube-apiserver's max-in-flight filter, what it applies with API Priority
//! and Fairness off: at most `--max-requests-inflight` read-only requests
//! (`get`, `list`, `watch` verbs) and `--max-mutating-requests-inflight`
//! others run at once (0: no limit); a request over the limit is refused at
//! once with 429 and `Retry-After: 1`. Long-running requests (watches,
//! exec, logs, proxies) and `system:masters` are not limited.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::apiserver::authn::User;
use crate::apiserver::request::RequestInfo;

/// Every slot of the request's kind is taken.
#[derive(Debug)]
pub struct Full;

/// The group whose requests are never limited.
const PRIVILEGED_GROUP: &str = "system:masters";

/// Slots for requests in flight, read-only and mutating apart.
#[derive(Debug)]
pub struct InFlightLimits {
    read_only: Option<Arc<Semaphore>>,
    mutating: Option<Arc<Semaphore>>,
}

impl InFlightLimits {
    /// `max_read_only` and `max_mutating` slots (0: unlimited).
    pub fn new(max_read_only: usize, max_mutating: usize) -> Self {
        let slots = |n: usize| (n > 0).then(|| Arc::new(Semaphore::new(n)));
        Self {
            read_only: slots(max_read_only),
            mutating: slots(max_mutating),
        }
    }

    /// The slots a request of `verb` takes from, if it is limited.
    fn pool(&self, verb: &str) -> Option<&Arc<Semaphore>> {
        if is_read_only(verb) {
            self.read_only.as_ref()
        } else {
            self.mutating.as_ref()
        }
    }
}

/// Upstream's non-mutating verbs.
fn is_read_only(verb: &str) -> bool {
    matches!(verb, "get" | "list" | "watch")
}

/// Whether a request is limited at all.
fn is_limited(info: &RequestInfo, user: Option<&User>) -> bool {
    !info.is_long_running() && !user.is_some_and(|u| u.groups.iter().any(|g| g == PRIVILEGED_GROUP))
}

impl InFlightLimits {
    /// A slot for the request, `Ok(None)` when it is not limited, `Err` when full.
    pub fn acquire(
        &self,
        info: &RequestInfo,
        user: Option<&User>,
    ) -> Result<Option<OwnedSemaphorePermit>, Full> {
        if !is_limited(info, user) {
            return Ok(None);
        }
        match self.pool(&info.verb) {
            None => Ok(None),
            Some(pool) => pool.clone().try_acquire_owned().map(Some).map_err(|_| Full),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_have_their_own_slots() {
        let limits = InFlightLimits::new(1, 0);
        assert!(limits.pool("list").is_some());
        assert!(limits.pool("create").is_none(), "0 is no limit");
        let permit = limits.pool("get").unwrap().clone().try_acquire_owned();
        assert!(permit.is_ok());
        assert!(
            limits
                .pool("watch")
                .unwrap()
                .clone()
                .try_acquire_owned()
                .is_err()
        );
    }

    #[test]
    fn watches_and_masters_are_not_limited() {
        let watch = RequestInfo::new(
            &axum::http::Method::GET,
            &"/api/v1/pods?watch=true".parse().unwrap(),
        );
        assert!(!is_limited(&watch, None));
        let list = RequestInfo::new(&axum::http::Method::GET, &"/api/v1/pods".parse().unwrap());
        assert!(is_limited(&list, None));
        let admin = User {
            name: "admin".into(),
            groups: vec!["system:masters".into()],
        };
        assert!(!is_limited(&list, Some(&admin)));
    }
}
