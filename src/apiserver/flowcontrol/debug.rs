//! `/debug/api_priority_and_fairness/dump_*`: the levels, queues and
//! requests, in upstream's comma-and-tab columns (cells end in `,`, are
//! padded to the widest cell plus one, at least 8).

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::FlowControl;
use super::queueset::{Descr, LevelDump};
use crate::apiserver::ApiState;
use crate::apiserver::request::ResourcePath;

/// The dumps' common path.
pub const PREFIX: &str = "/debug/api_priority_and_fairness";

/// `dump_priority_levels`.
pub fn priority_levels(levels: &[(String, LevelDump)]) -> String {
    let mut rows = vec![cells(&[
        "PriorityLevelName",
        "ActiveQueues",
        "IsIdle",
        "IsQuiescing",
        "WaitingRequests",
        "ExecutingRequests",
        "DispatchedRequests",
        "RejectedRequests",
        "TimedoutRequests",
        "CancelledRequests",
    ])];
    for (name, level) in levels {
        let active = level.queues.iter().filter(|q| q.waiting > 0).count();
        rows.push(vec![
            name.clone(),
            active.to_string(),
            (level.waiting == 0 && level.executing == 0).to_string(),
            "false".into(),
            level.waiting.to_string(),
            level.executing.to_string(),
            level.totals.dispatched.to_string(),
            level.totals.rejected.to_string(),
            "0".into(),
            level.totals.cancelled.to_string(),
        ]);
    }
    tabulate(&rows)
}

/// `dump_queues`: one row per queue of queued levels.
pub fn queues(levels: &[(String, LevelDump)]) -> String {
    let mut rows = vec![cells(&[
        "PriorityLevelName",
        "Index",
        "PendingRequests",
        "ExecutingRequests",
        "SeatsInUse",
        "NextDispatchR",
        "InitialSeatsSum",
        "MaxSeatsSum",
        "TotalWorkSum",
    ])];
    for (name, level) in levels {
        for (index, q) in level.queues.iter().enumerate() {
            rows.push(vec![
                name.clone(),
                index.to_string(),
                q.waiting.to_string(),
                q.executing.to_string(),
                q.seats_in_use.to_string(),
                seat_seconds(q.next_dispatch_r),
                q.initial_seats_sum.to_string(),
                q.initial_seats_sum.to_string(),
                seat_seconds(q.total_work),
            ]);
        }
    }
    tabulate(&rows)
}

/// `dump_requests`, with the user and request columns when `details`.
pub fn requests(levels: &[(String, LevelDump)], details: bool) -> String {
    let mut header = cells(&[
        "PriorityLevelName",
        "FlowSchemaName",
        "QueueIndex",
        "RequestIndexInQueue",
        "FlowDistingsher",
        "ArriveTime",
        "InitialSeats",
        "FinalSeats",
        "AdditionalLatency",
        "StartTime",
    ]);
    if details {
        header.extend(cells(&[
            "UserName",
            "Verb",
            "APIPath",
            "Namespace",
            "Name",
            "APIVersion",
            "Resource",
            "SubResource",
        ]));
    }
    let mut rows = vec![header];
    for (name, level) in levels {
        for r in &level.requests {
            let (queue, position) = match r.queue {
                Some((q, Some(p))) => (q as i64, p as i64),
                Some((q, None)) => (q as i64, -1),
                None => (-1, -1),
            };
            let mut row = vec![
                name.clone(),
                r.descr.flow_schema.clone(),
                queue.to_string(),
                position.to_string(),
                r.descr.distinguisher.clone(),
                rfc3339_nano(r.arrived_at),
                r.descr.seats.to_string(),
                "0".into(),
                "0s".into(),
                r.started_at
                    .map(rfc3339_nano)
                    .unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            ];
            if details {
                row.extend(request_details(&r.descr));
            }
            rows.push(row);
        }
    }
    tabulate(&rows)
}

/// The `includeRequestDetails` columns: user, verb, path, namespace, name,
/// apiVersion, resource, subresource.
fn request_details(descr: &Descr) -> [String; 8] {
    let info = &descr.info;
    let path = info.resource.as_ref();
    let field = |f: fn(&ResourcePath) -> String| path.map(f).unwrap_or_default();
    [
        descr.user.clone(),
        info.verb.clone(),
        info.path.clone(),
        field(|p| p.namespace.clone().unwrap_or_default()),
        info.name().unwrap_or("").to_string(),
        field(|p| {
            if p.group.is_empty() {
                p.version.clone()
            } else {
                format!("{}/{}", p.group, p.version)
            }
        }),
        field(|p| p.resource.clone()),
        field(|p| p.subresource.clone().unwrap_or_default()),
    ]
}

fn cells(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Go's text/tabwriter over cells joined by `",\t"`: every cell but a
/// line's last gets its comma and is padded to its column's width.
fn tabulate(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns.saturating_sub(1))
        .map(|c| {
            rows.iter()
                .filter(|r| c + 1 < r.len())
                .map(|r| r[c].chars().count() + 1 + 1)
                .max()
                .unwrap_or(0)
                .max(8)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                out.push_str(cell);
            } else {
                let text = format!("{cell},");
                out.push_str(&format!("{text:<width$}", width = widths[c]));
            }
        }
        out.push('\n');
    }
    out
}

/// Seat-seconds as upstream prints them (`0.00000000ss`).
fn seat_seconds(value: f64) -> String {
    format!("{:.8}ss", value.max(0.0))
}

/// RFC 3339 in UTC with nanoseconds, trailing zeros trimmed (Go's RFC3339Nano).
fn rfc3339_nano(at: SystemTime) -> String {
    let at: chrono::DateTime<chrono::Utc> = at.into();
    let nanos = at.timestamp_subsec_nanos();
    let base = at.format("%Y-%m-%dT%H:%M:%S").to_string();
    if nanos == 0 {
        return format!("{base}Z");
    }
    let fraction = format!("{nanos:09}");
    format!("{base}.{}Z", fraction.trim_end_matches('0'))
}

fn text(body: String) -> Response {
    (
        StatusCode::OK,
        [("content-type", "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn levels(state: &ApiState) -> Option<Vec<(String, LevelDump)>> {
    match &state.flow_control {
        FlowControl::PriorityAndFairness(apf) => Some(apf.dump()),
        FlowControl::MaxInFlight(_) => None,
    }
}

/// GET `dump_priority_levels`.
pub async fn dump_priority_levels(State(state): State<Arc<ApiState>>) -> Response {
    match levels(&state) {
        Some(levels) => text(priority_levels(&levels)),
        None => crate::api::ApiError::NoSuchPath.into_response(),
    }
}

/// GET `dump_queues`.
pub async fn dump_queues(State(state): State<Arc<ApiState>>) -> Response {
    match levels(&state) {
        Some(levels) => text(queues(&levels)),
        None => crate::api::ApiError::NoSuchPath.into_response(),
    }
}

/// GET `dump_requests[?includeRequestDetails=1]`.
pub async fn dump_requests(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let details = query
        .get("includeRequestDetails")
        .is_some_and(|v| !v.is_empty());
    match levels(&state) {
        Some(levels) => text(requests(&levels, details)),
        None => crate::api::ApiError::NoSuchPath.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::flowcontrol::queueset::{Descr, QueueSet, Queuing, Shape};

    #[test]
    fn columns_are_padded_as_tabwriter_does() {
        let out = tabulate(&[
            cells(&["PriorityLevelName", "IsIdle", "Last"]),
            cells(&["exempt", "true", "0"]),
        ]);
        assert_eq!(
            out,
            "PriorityLevelName, IsIdle, Last\n\
             exempt,            true,   0\n"
        );
    }

    #[test]
    fn dumps_show_waiting_and_running_requests() {
        let now = std::time::Instant::now();
        let mut qs = QueueSet::new(
            Shape::Queue(Queuing {
                queues: 2,
                hand_size: 1,
                queue_length_limit: 5,
            }),
            1,
            now,
        );
        for id in 1..=2 {
            qs.arrive(
                id,
                Arc::new(Descr {
                    flow_schema: "flood".into(),
                    distinguisher: "u".into(),
                    seats: 1,
                    user: "d0".into(),
                    info: Arc::new(crate::apiserver::request::RequestInfo::new(
                        &axum::http::Method::POST,
                        &"/api/v1/namespaces/ns/configmaps".parse().unwrap(),
                    )),
                }),
                0,
                now,
            );
        }
        let levels = vec![("small".to_string(), qs.dump())];
        let pl = priority_levels(&levels);
        let row = pl.lines().nth(1).unwrap();
        let cols: Vec<&str> = row.split(',').map(str::trim).collect();
        assert_eq!(
            cols,
            ["small", "1", "false", "false", "1", "1", "1", "0", "0", "0"]
        );
        let q = queues(&levels);
        assert_eq!(q.lines().count(), 3, "{q}");
        assert!(q.contains("0.00000000ss"), "{q}");
        let r = requests(&levels, true);
        let lines: Vec<&str> = r.lines().collect();
        let header: Vec<&str> = lines[0].split(',').map(str::trim).collect();
        assert_eq!(header.len(), 18);
        assert_eq!(&header[16..], ["Resource", "SubResource"]);
        // The waiting one first (queue 0, position 0), then the running one.
        let waiting: Vec<&str> = lines[1].split(',').map(str::trim).collect();
        assert_eq!(&waiting[..5], ["small", "flood", "0", "0", "u"]);
        assert_eq!(waiting[9], "0001-01-01T00:00:00Z");
        assert_eq!(
            &waiting[10..17],
            [
                "d0",
                "create",
                "/api/v1/namespaces/ns/configmaps",
                "ns",
                "",
                "v1",
                "configmaps"
            ]
        );
        let running: Vec<&str> = lines[2].split(',').map(str::trim).collect();
        assert_eq!(&running[2..4], ["0", "-1"]);
    }
}
