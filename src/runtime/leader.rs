//! Leader election on a coordination.k8s.io/v1 Lease, as upstream's
//! client-go does it for kube-controller-manager and kube-scheduler: where
//! several servers share a datastore, a component runs on one of them at a
//! time.
//!
//! With upstream's timings: the holder renews every [`RETRY_PERIOD`] and
//! stands down if it cannot renew for [`RENEW_DEADLINE`]; another takes
//! over once the Lease has not changed for [`LEASE_DURATION`] *as this
//! process observed it* (its own clock, so clock skew between servers does
//! not matter). At a stop, the holder releases the Lease so another takes
//! over at once.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;

use super::{Components, Shutdown};

/// How long a Lease holds without renewal (upstream's 15 s).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the holder keeps trying to renew before it stands down (10 s).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the holder renews and the others look (2 s).
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// How long a component that lost its Lease gets to stop.
const STAND_DOWN_GRACE: Duration = Duration::from_secs(10);

/// One Lease in kube-system, campaigned for as `identity`.
pub struct Election {
    leases: Api<Lease>,
    name: &'static str,
    identity: String,
    /// `leader_election_master_status{name}`: 1 while this process holds the Lease.
    status: Option<prometheus_client::metrics::gauge::Gauge>,
}

/// The holder part of a Lease as last seen, and when this process saw it change.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    transitions: i32,
}

/// What this process may do with the Lease as it found it.
#[derive(Debug, PartialEq)]
enum Decision {
    /// Nobody holds it, the holder gave it up, or it expired: take it.
    Take,
    /// This process holds it: renew.
    Renew,
    /// Another holds it and it has not expired.
    Wait,
}

fn record(lease: &Lease) -> Record {
    let spec = lease.spec.clone().unwrap_or_default();
    Record {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        renew_time: spec.renew_time,
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

/// The decision, without I/O: `observed` is when this process first saw
/// the record as it is now.
fn decide(record: &Record, identity: &str, observed: Instant, now: Instant) -> Decision {
    match &record.holder {
        None => Decision::Take,
        Some(holder) if holder == identity => Decision::Renew,
        Some(_) if now.duration_since(observed) >= LEASE_DURATION => Decision::Take,
        Some(_) => Decision::Wait,
    }
}

impl Election {
    /// The Lease `kube-system/name`, written through `client`.
    pub fn new(client: kube::Client, name: &'static str, identity: String) -> Self {
        Self {
            leases: Api::namespaced(client, "kube-system"),
            name,
            identity,
            status: None,
        }
    }

    /// Keeps `status` at 1 while this process holds the Lease, else 0.
    pub fn reporting(mut self, status: prometheus_client::metrics::gauge::Gauge) -> Self {
        status.set(0);
        self.status = Some(status);
        self
    }

    fn report(&self, leading: bool) {
        if let Some(status) = &self.status {
            status.set(i64::from(leading));
        }
    }

    /// This server's identity in Leases: its host name and a unique
    /// suffix, as upstream's `<hostname>_<uuid>`.
    pub fn identity(host: &str) -> String {
        format!("{host}_{}", uuid::Uuid::new_v4())
    }

    /// Runs `lead(term)` whenever this process holds the Lease, until
    /// `shutdown`. A term ends when the Lease is lost (the component is
    /// told to stop, and the campaign goes on) or at the stop (the Lease is
    /// then released).
    pub async fn run<F, Fut>(self, shutdown: Shutdown, lead: F) -> anyhow::Result<()>
    where
        F: Fn(Shutdown) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let mut seen: Option<(Record, Instant)> = None;
        loop {
            // Campaign until this process holds the Lease.
            loop {
                match self.try_acquire(&mut seen).await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => tracing::debug!(lease = self.name, err = %e, "leader election"),
                }
                if shutdown
                    .until(tokio::time::sleep(RETRY_PERIOD))
                    .await
                    .is_none()
                {
                    return Ok(());
                }
            }
            tracing::info!(lease = self.name, identity = %self.identity, "became the leader");
            self.report(true);
            let mut term = Components::new();
            term.start(self.name, &lead);
            let stopping = shutdown.until(self.hold(&mut seen)).await.is_none();
            term.stop(STAND_DOWN_GRACE).await;
            self.report(false);
            if stopping {
                self.release().await;
                return Ok(());
            }
            tracing::warn!(lease = self.name, identity = %self.identity, "lost the lease; standing down");
        }
    }

    /// Renews every [`RETRY_PERIOD`]; returns once a renewal has not
    /// succeeded for [`RENEW_DEADLINE`] or another took the Lease.
    async fn hold(&self, seen: &mut Option<(Record, Instant)>) {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(RETRY_PERIOD).await;
            match self.try_acquire(seen).await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(lease = self.name, err = %e, "renewing the lease");
                    if renewed.elapsed() >= RENEW_DEADLINE {
                        return;
                    }
                }
            }
        }
    }

    /// One look at the Lease: takes or renews it if this process may;
    /// whether it holds it now.
    async fn try_acquire(&self, seen: &mut Option<(Record, Instant)>) -> kube::Result<bool> {
        let now = Instant::now();
        let Some(lease) = self.leases.get_opt(self.name).await? else {
            self.leases
                .create(&PostParams::default(), &self.lease(None, 0))
                .await?;
            return Ok(true);
        };
        let current = record(&lease);
        let observed = match seen {
            Some((record, at)) if *record == current => *at,
            _ => now,
        };
        *seen = Some((current.clone(), observed));
        let (acquired, transitions) = match decide(&current, &self.identity, observed, now) {
            Decision::Wait => return Ok(false),
            Decision::Renew => (
                lease.spec.as_ref().and_then(|s| s.acquire_time.clone()),
                current.transitions,
            ),
            Decision::Take => (None, current.transitions + 1),
        };
        let mut next = self.lease(acquired, transitions);
        next.metadata = lease.metadata.clone();
        // The update carries the resourceVersion read: of two servers
        // taking the Lease at once, one wins and the other sees a conflict.
        self.leases
            .replace(self.name, &PostParams::default(), &next)
            .await?;
        Ok(true)
    }

    /// The Lease as this process holds it.
    fn lease(&self, acquired: Option<MicroTime>, transitions: i32) -> Lease {
        let now = MicroTime(jiff::Timestamp::now());
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.into()),
                namespace: Some("kube-system".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
                renew_time: Some(now),
                lease_transitions: Some(transitions),
                ..Default::default()
            }),
        }
    }

    /// Gives the Lease up at a stop (upstream's ReleaseOnCancel): another
    /// server takes it at its next look instead of after the lease duration.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.leases.get_opt(self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(e) = self
            .leases
            .replace(self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::debug!(lease = self.name, err = %e, "releasing the lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: Option<&str>) -> Record {
        Record {
            holder: holder.map(str::to_string),
            renew_time: None,
            transitions: 3,
        }
    }

    #[test]
    fn a_free_lease_is_taken_and_ones_own_renewed() {
        let now = Instant::now();
        assert_eq!(decide(&held_by(None), "me", now, now), Decision::Take);
        assert_eq!(
            decide(&held_by(Some("me")), "me", now, now),
            Decision::Renew
        );
    }

    #[test]
    fn anothers_lease_is_taken_only_once_unchanged_for_the_lease_duration() {
        let observed = Instant::now();
        let record = held_by(Some("other"));
        let just_before = observed + LEASE_DURATION - Duration::from_millis(1);
        assert_eq!(decide(&record, "me", observed, just_before), Decision::Wait);
        assert_eq!(
            decide(&record, "me", observed, observed + LEASE_DURATION),
            Decision::Take
        );
    }
}
