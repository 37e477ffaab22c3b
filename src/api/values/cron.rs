//! CronJob schedules and time zones as upstream reads them: what the
//! strategy validates and the CronJob controller runs by.

/// A CronJob's schedule as upstream's standard parser reads it: five
/// fields (minute hour day-of-month month day-of-week; day-of-month and
/// day-of-week match either) or a macro such as `@hourly`.
pub fn parse_schedule(schedule: &str) -> Result<croner::Cron, String> {
    if schedule.starts_with("TZ=") || schedule.starts_with("CRON_TZ=") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(schedule)
        .map_err(|e| format!("unparseable schedule: {e}"))
}

/// A CronJob's `timeZone` (unset: the node's local time).
pub fn time_zone(name: Option<&str>) -> Result<jiff::tz::TimeZone, String> {
    match name {
        None => Ok(jiff::tz::TimeZone::system()),
        Some(name) => {
            jiff::tz::TimeZone::get(name).map_err(|_| format!("unknown time zone {name}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_as_standard_cron() {
        assert!(parse_schedule("*/1 * * * *").is_ok());
        assert!(parse_schedule("0 3 * * MON-FRI").is_ok());
        assert!(parse_schedule("@hourly").is_ok());
        assert!(
            parse_schedule("* * * * * *").is_err(),
            "seconds are not standard"
        );
        assert!(parse_schedule("61 * * * *").is_err());
        assert!(parse_schedule("TZ=UTC * * * * *").is_err());
        assert!(time_zone(Some("Etc/UTC")).is_ok());
        assert!(time_zone(Some("Mars/Olympus")).is_err());
    }
}
