//! Metrics pages read with Prometheus' own text parser (Debian's
//! python3-prometheus-client), as a scraper would.

use std::collections::BTreeMap;
use std::process::Command;

/// Families of a metrics page as Prometheus' Python parser reads them:
/// name to (type, help, samples as (name, labels, value)).
pub type Families =
    BTreeMap<String, (String, String, Vec<(String, BTreeMap<String, String>, f64)>)>;

/// Parses `text` with `prometheus_client.parser` (Debian's
/// python3-prometheus-client); panics when it refuses the text.
pub fn parse(text: &str) -> Families {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = [f.type, f.documentation, [[s.name, s.labels, s.value] for s in f.samples]]
print(json.dumps(out))
"#;
    // Debian's interpreter, where python3-prometheus-client is installed.
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("parser");
    assert!(
        out.status.success(),
        "the Prometheus parser refused the page: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("parser JSON");
    value
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, f)| {
            let samples = f[2]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let labels = s[1]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect();
                    (
                        s[0].as_str().unwrap().to_string(),
                        labels,
                        s[2].as_f64().unwrap_or(f64::NAN),
                    )
                })
                .collect();
            (
                name.clone(),
                (
                    f[0].as_str().unwrap().to_string(),
                    f[1].as_str().unwrap().to_string(),
                    samples,
                ),
            )
        })
        .collect()
}

/// The sum of the samples named `sample` of `family` whose labels include
/// every pair of `labels` (a value ending in `*` matches a prefix).
pub fn sum(families: &Families, family: &str, sample: &str, labels: &[(&str, &str)]) -> f64 {
    families
        .get(family)
        .map(|f| {
            f.2.iter()
                .filter(|(name, l, _)| {
                    name == sample
                        && labels.iter().all(|(k, v)| match v.strip_suffix('*') {
                            Some(prefix) => l.get(*k).is_some_and(|x| x.starts_with(prefix)),
                            None => l.get(*k).map(String::as_str) == Some(*v),
                        })
                })
                .map(|(_, _, v)| v)
                .sum()
        })
        .unwrap_or(0.0)
}
