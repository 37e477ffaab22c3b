//! The import rules of docs/DESIGN.md (§2 "Where the code lives", §3),
//! checked on the source: every `crate::MODULE` path in `src/` must name a
//! module its own top-level module may use. Imports run downwards only: the API server
//! never reaches into the kubelet or a controller, the kubelet never into
//! the API server, nothing but the API server (and the CLI that starts it)
//! touches the store, and shared helpers live in leaves. Inside `api`,
//! the same holds one level down: `registry` over `codec` and `printers`
//! over `values`, and components outside the API server use only `values`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Leaves: used by many, use nothing but another leaf.
const LEAVES: &[&str] = &[
    "platform",
    "telemetry",
    "runtime",
    "network",
    "pki",
    "gofmt",
];
/// Client-side plumbing every component may use.
const COMPONENT_BASE: &[&str] = &[
    "api",
    "gofmt",
    "runtime",
    "telemetry",
    "pki",
    "http",
    "network",
    "platform",
];

/// What each top-level module may import besides itself.
fn allowed(module: &str) -> Option<BTreeSet<&'static str>> {
    let set = |items: &[&'static str]| items.iter().copied().collect::<BTreeSet<_>>();
    Some(match module {
        "platform" | "runtime" | "pki" | "gofmt" => BTreeSet::new(),
        // The route keeper's Node cache waits through the runtime's helper.
        "network" => set(&["runtime"]),
        // klog's text needs Go's quoting and float format.
        "telemetry" => set(&["gofmt"]),
        "http" => set(&["pki"]),
        "store" => set(&["telemetry"]),
        "api" => set(&["pki", "platform", "gofmt"]),
        "apiserver" => set(&[
            "api",
            "gofmt",
            "store",
            "pki",
            "telemetry",
            "http",
            "platform",
            "network",
        ]),
        "kubelet" | "scheduler" | "controllers" | "dns" | "proxy" | "helm" | "ingress"
        | "netpol" | "local_storage" => set(COMPONENT_BASE),
        "agent" => {
            let mut s = set(COMPONENT_BASE);
            s.extend([
                "kubelet",
                "dns",
                "proxy",
                "netpol",
                "local_storage",
                "ingress",
            ]);
            s
        }
        // The CLI wires everything; lib.rs and main.rs only declare and dispatch.
        "cli" | "lib" | "main" => return None,
        _ => {
            return Some(BTreeSet::from([
                "<unknown module: add it to tests/layering.rs>",
            ]));
        }
    })
}

/// The parts of `api` a file under `src/<module>/…` (or `src/api/<part>/…`)
/// may name as `crate::api::PART`; None: any.
fn allowed_api_parts(module: &str, api_part: Option<&str>) -> Option<BTreeSet<&'static str>> {
    const ERROR: [&str; 3] = ["error", "ApiError", "FieldError"];
    let with_error = |parts: &[&'static str]| {
        parts
            .iter()
            .chain(ERROR.iter())
            .copied()
            .collect::<BTreeSet<_>>()
    };
    Some(match (module, api_part) {
        ("api", Some("values")) => with_error(&["values"]),
        ("api", Some("codec")) => with_error(&["codec", "values"]),
        ("api", Some("printers")) => with_error(&["printers", "values"]),
        ("api", Some("registry")) => with_error(&["registry", "codec", "printers", "values"]),
        ("api" | "apiserver" | "cli" | "lib" | "main", _) => return None,
        _ => BTreeSet::from(["values"]),
    })
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `NAME`s a source text names as `PREFIX NAME` (`crate::NAME`,
/// `crate::api::NAME`).
fn names_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        // `kelp_crate::x` or `some_crate::x` are other things.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

/// The modules a source text names as `crate::NAME`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    names_after(text, "crate::")
}

/// Every file under `src/` whose `PREFIX NAME` paths name what `allowed`
/// (given the file's path components below `src/`) does not list; None
/// from `allowed`: anything.
fn against_rules(
    prefix: &str,
    allowed: impl Fn(&[&str]) -> Option<BTreeSet<&'static str>>,
) -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut upward: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let parts: Vec<&str> = relative
            .components()
            .filter_map(|c| c.as_os_str().to_str())
            .map(|c| c.trim_end_matches(".rs"))
            .collect();
        let Some(allowed) = allowed(&parts) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("source");
        for used in names_after(&text, prefix) {
            if used != parts[0] && !allowed.contains(used.as_str()) {
                upward
                    .entry(format!("{} ({})", relative.display(), parts[0]))
                    .or_default()
                    .insert(used);
            }
        }
    }
    upward
}

/// `against_rules`' findings, a line each.
fn listed(upward: &BTreeMap<String, BTreeSet<String>>) -> String {
    upward
        .iter()
        .map(|(f, m)| {
            format!(
                "  {f} → {}",
                m.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn imports_run_downwards_only() {
    let upward = against_rules("crate::", |parts| allowed(parts[0]));
    assert!(
        upward.is_empty(),
        "imports against the layering (file (module) → modules it may not use):\n{}",
        listed(&upward)
    );
}

#[test]
fn api_parts_import_downwards_and_components_use_only_values() {
    let upward = against_rules("crate::api::", |parts| {
        allowed_api_parts(parts[0], parts.get(1).copied())
    });
    assert!(
        upward.is_empty(),
        "api parts used against the layering (file (module) → crate::api::PART):\n{}",
        listed(&upward)
    );
}

#[test]
fn leaves_and_rules_cover_every_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in std::fs::read_dir(&src).expect("src") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        let module = name.trim_end_matches(".rs");
        assert!(
            allowed(module).is_none_or(|a| !a.iter().any(|m| m.starts_with('<'))),
            "src/{name} has no layering rule in tests/layering.rs"
        );
    }
    // Leaves use at most other leaves, and gofmt (which they may use) nothing.
    for leaf in LEAVES {
        assert!(
            allowed(leaf).is_some_and(|a| a.iter().all(|m| LEAVES.contains(m))),
            "{leaf}"
        );
    }
    assert!(allowed("gofmt").is_some_and(|a| a.is_empty()));
}

#[test]
fn crate_paths_are_found_in_use_lines_and_inline_paths() {
    let text =
        "use crate::api::x;\nlet y = crate::store::open();\nuse kelp_crate::z; // crate::pki\n";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, ["api", "pki", "store"]);
    let parts: Vec<String> = names_after(text, "crate::api::").into_iter().collect();
    assert_eq!(parts, ["x"]);
}
