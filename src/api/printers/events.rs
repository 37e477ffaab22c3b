//! Event printers: core/v1 Events and events.k8s.io Events, which upstream prints
//! through the same (internal) Event printer.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::helpers::{at, at_or_null, int_at, name, non_empty_or, since, str_at, time_at};
use super::{Col, NAME, Table, row, text};

const EVENT_COLUMNS: &[Col] = &[
    text("Last Seen", ""),
    text("Type", ""),
    text("Reason", ""),
    text("Object", "The object that this event is about."),
    text("Subobject", "").wide(),
    text("Source", "").wide(),
    text("Message", ""),
    text("First Seen", "").wide(),
    text("Count", "The number of times this event has occurred.").wide(),
    NAME.wide(),
];

pub(crate) const EVENT: Table = Table {
    columns: EVENT_COLUMNS,
    cells: |e, now| event_cells(e, &CORE_EVENT, now),
};

/// events.k8s.io Events print through the same (internal core) Event printer.
pub(crate) const EVENTS_EVENT: Table = Table {
    columns: EVENT_COLUMNS,
    cells: |e, now| event_cells(e, &EVENTS_V1, now),
};

/// Where an Event version keeps the fields the printer reads.
struct EventShape {
    involved: &'static str,
    message: &'static str,
    source: &'static str,
    first: &'static str,
    last: &'static str,
    count: &'static str,
    controller: &'static str,
}

const CORE_EVENT: EventShape = EventShape {
    involved: "/involvedObject",
    message: "/message",
    source: "/source",
    first: "/firstTimestamp",
    last: "/lastTimestamp",
    count: "/count",
    controller: "/reportingComponent",
};

const EVENTS_V1: EventShape = EventShape {
    involved: "/regarding",
    message: "/note",
    source: "/deprecatedSource",
    first: "/deprecatedFirstTimestamp",
    last: "/deprecatedLastTimestamp",
    count: "/deprecatedCount",
    controller: "/reportingController",
};

fn event_cells(e: &Value, shape: &EventShape, now: DateTime<Utc>) -> Vec<Value> {
    let first = since(
        time_at(e, shape.first).or_else(|| time_at(e, "/eventTime")),
        now,
    );
    let mut last = time_at(e, shape.last).map_or_else(|| first.clone(), |t| since(Some(t), now));
    let mut count = int_at(e, shape.count);
    if at(e, "/series").is_some() {
        last = since(time_at(e, "/series/lastObservedTime"), now);
        count = int_at(e, "/series/count");
    } else if count == 0 {
        count = 1;
    }
    let involved = at_or_null(e, shape.involved);
    let kind = str_at(involved, "/kind").to_lowercase();
    let target = match str_at(involved, "/name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let source = at_or_null(e, shape.source);
    let component = non_empty_or(str_at(source, "/component"), str_at(e, shape.controller));
    let host = non_empty_or(str_at(source, "/host"), str_at(e, "/reportingInstance"));
    let source = if host.is_empty() {
        component
    } else {
        format!("{component}, {host}")
    };
    row![
        last,
        str_at(e, "/type"),
        str_at(e, "/reason"),
        target,
        str_at(involved, "/fieldPath"),
        source,
        str_at(e, shape.message).trim(),
        first,
        count,
        name(e),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{ago, cells, names};
    use serde_json::json;

    #[test]
    fn core_events() {
        assert_eq!(
            names("", "Event"),
            [
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name"
            ]
        );
        let e = json!({"metadata": {"name": "web-1.17a"}, "type": "Warning", "reason": "BackOff",
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{app}"},
            "source": {"component": "kubelet", "host": "node-a"}, "message": " Back-off restarting failed container \n",
            "firstTimestamp": ago(3600), "lastTimestamp": ago(120), "count": 7});
        assert_eq!(
            cells("", "Event", &e),
            [
                json!("2m"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web-1"),
                json!("spec.containers{app}"),
                json!("kubelet, node-a"),
                json!("Back-off restarting failed container"),
                json!("60m"),
                json!(7),
                json!("web-1.17a")
            ]
        );
        let new_style = json!({"metadata": {"name": "e"}, "eventTime": "2024-05-01T11:59:30.000000Z",
            "reportingComponent": "scheduler", "involvedObject": {"kind": "Node"}, "reason": "Scheduled"});
        let row = cells("", "Event", &new_style);
        assert_eq!(row[0], json!("30s"));
        assert_eq!(row[3], json!("node"));
        assert_eq!(row[5], json!("scheduler"));
        assert_eq!(row[7..9], [json!("30s"), json!(1)]);
    }

    #[test]
    fn events_k8s_io_events() {
        let e = json!({"apiVersion": "events.k8s.io/v1", "metadata": {"name": "ev"}, "type": "Normal", "reason": "Pulled",
            "regarding": {"kind": "Pod", "name": "web-1"}, "note": "Pulled image", "reportingController": "kubelet",
            "reportingInstance": "node-a", "eventTime": ago(600),
            "series": {"count": 4, "lastObservedTime": ago(60)}});
        assert_eq!(
            cells("events.k8s.io", "Event", &e),
            [
                json!("60s"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web-1"),
                json!(""),
                json!("kubelet, node-a"),
                json!("Pulled image"),
                json!("10m"),
                json!(4),
                json!("ev")
            ]
        );
    }
}
