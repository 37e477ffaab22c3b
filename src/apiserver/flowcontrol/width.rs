//! How many seats a request occupies (upstream's work estimator): a LIST
//! by how many objects it reads, one seat for everything else.
//!
//! Not estimated as upstream: the extra seats a write holds after it
//! returns while watches are notified (kelp's watch fan-out is in-process
//! and cheap), so writes take one seat.

use crate::apiserver::request::RequestInfo;

/// Objects read per seat.
const OBJECTS_PER_SEAT: i64 = 100;

/// Seats of a request, between 1 and `max_seats`; `objects` gives the
/// stored object count of a resource label (`pods`, `deployments.apps`),
/// None when unknown, negative when the count failed.
pub fn seats(info: &RequestInfo, max_seats: u32, objects: impl Fn(&str) -> Option<i64>) -> u32 {
    let max_seats = max_seats.max(1);
    let Some(path) = info.resource.as_ref().filter(|_| info.verb == "list") else {
        return 1;
    };
    if path.name.is_some() {
        return 1;
    }
    let query = &info.query;
    let limit = match query.get("limit").map(str::parse::<i64>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return max_seats,
    };
    let label = if path.group.is_empty() {
        path.resource.clone()
    } else {
        format!("{}.{}", path.resource, path.group)
    };
    let Some(count) = objects(&label) else {
        return 1;
    };
    if count < 0 {
        return max_seats;
    }
    let limit = if limit > 0 && limit < count {
        limit
    } else {
        count
    };
    let resource_version = query.get("resourceVersion").unwrap_or("");
    let from_storage = matches!(
        query.get("resourceVersionMatch"),
        Some(m) if m != "NotOlderThan"
    ) || query.get("continue").is_some_and(|c| !c.is_empty())
        || (limit > 0 && !matches!(resource_version, "" | "0") && limit < count);
    let estimate = if !from_storage {
        // What upstream serves from its watch cache reads every object.
        count
    } else if query.get("labelSelector").is_some_and(|s| !s.is_empty())
        || query.get("fieldSelector").is_some_and(|s| !s.is_empty())
    {
        count + limit
    } else {
        2 * limit
    };
    let seats = (estimate + OBJECTS_PER_SEAT - 1) / OBJECTS_PER_SEAT;
    seats.clamp(1, i64::from(max_seats)) as u32
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;

    fn seats_of(uri: &str, count: Option<i64>) -> u32 {
        let info = RequestInfo::new(&Method::GET, &uri.parse().unwrap());
        seats(&info, 10, |label| {
            assert!(label == "pods" || label == "deployments.apps", "{label}");
            count
        })
    }

    #[test]
    fn lists_take_a_seat_per_hundred_objects() {
        assert_eq!(seats_of("/api/v1/pods", Some(50)), 1);
        assert_eq!(seats_of("/api/v1/pods", Some(450)), 5);
        assert_eq!(seats_of("/api/v1/pods", Some(5000)), 10, "capped");
        assert_eq!(seats_of("/apis/apps/v1/deployments", Some(301)), 4);
        // A page read from storage: twice the limit.
        assert_eq!(
            seats_of("/api/v1/pods?limit=250&continue=abc", Some(5000)),
            5
        );
        assert_eq!(seats_of("/api/v1/pods", None), 1, "unknown resource");
        assert_eq!(seats_of("/api/v1/pods", Some(-1)), 10, "failed count");
        assert_eq!(seats_of("/api/v1/pods?limit=x", Some(5)), 10, "bad options");
    }

    #[test]
    fn everything_else_takes_one() {
        assert_eq!(seats_of("/api/v1/namespaces/a/pods/x", Some(5000)), 1);
        assert_eq!(seats_of("/api/v1/pods?watch=1", Some(5000)), 1);
        let create = RequestInfo::new(&Method::POST, &"/api/v1/namespaces/a/pods".parse().unwrap());
        assert_eq!(seats(&create, 10, |_| Some(5000)), 1);
    }
}
