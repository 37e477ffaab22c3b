//! Bounded fuzzing of the decoders bad input reaches first: request bodies
//! (JSON, YAML, protobuf), strategic merge and JSON patches, label and field
//! selectors, quantities, EncryptionConfigurations and audit policies. Each
//! round mutates a valid seed (bit flips, byte insertions and deletions,
//! splices of other seeds, truncation) or makes random bytes, feeds it to
//! the decoder under `catch_unwind`, and counts inputs and panics. A panic's
//! input is printed so it can become a regression test. Runs for
//! `FUZZ_SECONDS` (default 60) split over the targets; not part of CI.
//!
//! `cargo bench --bench fuzz` (or `FUZZ_SECONDS=600 cargo bench --bench fuzz`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use kelp::api::registry::schema::Schemas;
use kelp::apiserver::body::{BodyFormat, decode_as};

// Seeded per target, so a crash's input can be regenerated from the round number.
#[path = "../tests/common/rng.rs"]
mod rng;
use rng::Rng;

/// Interesting bytes for text formats.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"\\u0000",
    b"\\ud800",
    b"null",
    b"1e999",
    b"-",
    b"=",
    b"!=",
    b"in",
    b"notin",
    b"(",
    b")",
    b"$patch",
    b"$retainKeys",
    b"$setElementOrder/containers",
    b"replace",
    b"delete",
    b"---\n",
    b"&a",
    b"*a",
    b"!!binary",
    b"\xff",
    b"\xc3\x28",
    b"k8s:enc:",
    b"Ki",
    b"Mi",
    b"e3",
    b"m",
    b"0x",
    b"*",
];

fn mutate(rng: &mut Rng, seeds: &[&[u8]]) -> Vec<u8> {
    let mut input = seeds[rng.below(seeds.len())].to_vec();
    if rng.below(16) == 0 {
        return (0..rng.below(256)).map(|_| rng.next() as u8).collect();
    }
    for _ in 0..=rng.below(8) {
        let at = rng.below(input.len() + 1);
        match rng.below(6) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 => input.insert(at.min(input.len()), rng.next() as u8),
            2 if !input.is_empty() => {
                input.remove(rng.below(input.len()));
            }
            3 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                let at = at.min(input.len());
                input.splice(at..at, token.iter().copied());
            }
            4 => {
                let other = seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                let at = at.min(input.len());
                input.splice(at.., other[from..].iter().copied());
            }
            _ => input.truncate(at.min(input.len())),
        }
    }
    input
}

/// Feeds one input to a decoder.
type Decoder = Box<dyn Fn(&[u8])>;

/// One decoder under test.
struct Target {
    name: &'static str,
    seeds: Vec<&'static [u8]>,
    run: Decoder,
}

fn targets() -> Vec<Target> {
    let schemas = Schemas::builtin();
    let defs = schemas.definitions().clone();
    let deployment: serde_json::Value = serde_json::from_str(
        r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","labels":{"a":"b"}},
            "spec":{"replicas":2,"template":{"spec":{"containers":[{"name":"c","image":"i","env":[{"name":"A","value":"1"}]}]}}}}"#,
    )
    .expect("seed");
    let deployment_for_json_patch = deployment.clone();
    vec![
        Target {
            name: "JSON bodies",
            seeds: vec![
                br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v"}}"#,
                br#"{"a":[1,2,{"b":null}],"a":"dup","c":1e3}"#,
            ],
            run: Box::new(|b| {
                let _ = decode_as(BodyFormat::Json, b);
            }),
        },
        Target {
            name: "YAML bodies",
            seeds: vec![
                b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: i\n",
                b"a: &x [1, 2]\nb: *x\nc: !!str 3\n",
            ],
            run: Box::new(|b| {
                let _ = decode_as(BodyFormat::Yaml, b);
            }),
        },
        Target {
            name: "protobuf bodies",
            seeds: vec![
                b"k8s\x00\x0a\x0c\x0a\x02v1\x12\x06Secret\x12\x10\x0a\x0e\x0a\x02db\x12\x00\x1a\x06team\x22\x00",
                b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\x05\x0a\x03\x0a\x01a",
            ],
            run: Box::new(|b| {
                let _ = decode_as(BodyFormat::Protobuf, b);
            }),
        },
        Target {
            name: "strategic merge patches",
            seeds: vec![
                br#"{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"j"}]}}}}"#,
                br#"{"metadata":{"labels":{"a":null}},"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"c"}],"containers":[{"$patch":"delete","name":"c"}]}}}}"#,
            ],
            run: Box::new(move |b| {
                if let Ok(patch) = serde_json::from_slice::<serde_json::Value>(b) {
                    let _ = kelp::api::codec::strategic_merge::apply(
                        &deployment,
                        &patch,
                        Some("io.k8s.api.apps.v1.Deployment"),
                        &defs,
                    );
                }
            }),
        },
        Target {
            name: "JSON patches",
            seeds: vec![
                br#"[{"op":"replace","path":"/spec/replicas","value":3}]"#,
                br#"[{"op":"move","from":"/metadata/labels","path":"/spec/x"},{"op":"remove","path":"/spec/template/spec/containers/0"}]"#,
            ],
            run: Box::new(move |b| {
                if let Ok(ops) = serde_json::from_slice::<json_patch::Patch>(b) {
                    let mut target = deployment_for_json_patch.clone();
                    // As the API applies them (handlers/patch.rs).
                    let _ = json_patch::patch_unsafe(&mut target, &ops);
                }
            }),
        },
        Target {
            name: "label selectors",
            seeds: vec![b"app=web,tier!=db", b"env in (a,b),!legacy,x notin (y)"],
            run: Box::new(|b| {
                let _ = kelp::api::values::selectors::LabelSelector::parse(&String::from_utf8_lossy(b));
            }),
        },
        Target {
            name: "field selectors",
            seeds: vec![b"metadata.name=a,status.phase!=Running", b"spec.nodeName==n"],
            run: Box::new(|b| {
                let _ = kelp::api::values::selectors::FieldSelector::parse(
                    &String::from_utf8_lossy(b),
                    &["metadata.name", "status.phase", "spec.nodeName"],
                );
            }),
        },
        Target {
            name: "quantities",
            seeds: vec![b"100m", b"1.5Gi", b"2e3", b"-0.5Ki"],
            run: Box::new(|b| {
                let text = String::from_utf8_lossy(b);
                let _ = kelp::api::values::quantity::parse(&text);
                let _ = kelp::api::values::quantity::milli(&text);
            }),
        },
        Target {
            name: "encryption configurations",
            seeds: vec![
                br#"{"kind":"EncryptionConfiguration","apiVersion":"apiserver.config.k8s.io/v1","resources":[{"resources":["secrets"],"providers":[{"aescbc":{"keys":[{"name":"k","secret":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}]}},{"identity":{}}]}]}"#,
            ],
            run: Box::new(|b| {
                let _ = kelp::store::encryption::EncryptionConfig::parse(&String::from_utf8_lossy(b));
            }),
        },
        Target {
            name: "audit policies",
            seeds: vec![
                b"apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n  resources:\n  - group: \"\"\n    resources: [\"pods/log\"]\n",
            ],
            run: Box::new(|b| {
                let _ = kelp::apiserver::audit::Policy::parse(&String::from_utf8_lossy(b));
            }),
        },
    ]
}

fn main() {
    // Panics are what we count; their default report would flood the output.
    std::panic::set_hook(Box::new(|_| {}));
    let seconds: u64 = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let targets = targets();
    let each = Duration::from_secs(seconds) / targets.len() as u32;
    let (mut total, mut crashes) = (0u64, 0u64);
    for (i, target) in targets.iter().enumerate() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
        let started = Instant::now();
        let (mut tried, mut found) = (0u64, 0u64);
        while started.elapsed() < each {
            let input = mutate(&mut rng, &target.seeds);
            tried += 1;
            if catch_unwind(AssertUnwindSafe(|| (target.run)(&input))).is_err() {
                found += 1;
                if found <= 3 {
                    println!(
                        "  PANIC in {}: input {:?}",
                        target.name,
                        String::from_utf8_lossy(&input)
                    );
                }
            }
        }
        println!("{:<26} {tried:>10} inputs, {found} panics", target.name);
        total += tried;
        crashes += found;
    }
    println!("total: {total} inputs in {seconds} s, {crashes} panics");
}
