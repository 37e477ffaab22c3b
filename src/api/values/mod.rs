//! Kubernetes value semantics, the one home for each: object metadata,
//! quantities, label and field selectors, conditions, pod, node and
//! storage facts, CronJob schedules, scheduling terms, quota usage, the Summary API types.
//! Every component may import these; they import nothing else of `api`
//! but its error shape.

pub mod conditions;
pub mod cron;
pub mod meta;
pub mod nodes;
pub mod pods;
pub mod quantity;
pub mod quota;
pub mod scheduling;
pub mod selectors;
pub mod storage;
pub mod summary;
