//! An admission webhook for tests: an HTTPS server on loopback (its own CA,
//! a certificate for 127.0.0.1) answering AdmissionReviews with a function
//! of the review's request, one thread per connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{Value, json};

/// What the webhook answers: allowed (with a JSON patch and warnings) or denied.
pub enum Answer {
    /// Allowed, with RFC 6902 operations (mutating webhooks) and warnings.
    Allow {
        patch: Option<Value>,
        warnings: Vec<String>,
    },
    /// Denied with this `status`.
    Deny(Value),
}

/// A running webhook.
pub struct Webhook {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Its CA certificate, base64 of the PEM (a configuration's `caBundle`).
    pub ca_bundle: String,
    /// Every request seen: (path, AdmissionReview request).
    pub seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Webhook {
    /// Starts answering with `decide(path, request)`.
    pub fn start(decide: impl Fn(&str, &Value) -> Answer + Send + Sync + 'static) -> Webhook {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kelp test webhook CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA cert");
        let key = rcgen::KeyPair::generate().expect("key");
        // Called by URL at 127.0.0.1, or as the Service `kelp-webhook` in `hooked`.
        let params = rcgen::CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "kelp-webhook.hooked.svc".to_string(),
        ])
        .expect("params");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let cert = params.signed_by(&key, &issuer).expect("cert");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let decide = Arc::new(decide);
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (config, decide, log) = (config.clone(), decide.clone(), log.clone());
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(config).expect("connection");
                    let mut tls = rustls::StreamOwned::new(conn, stream);
                    if let Some((path, body)) = read_request(&mut tls) {
                        let review: Value = serde_json::from_slice(&body).unwrap_or_default();
                        let request = review["request"].clone();
                        let answer = decide(&path, &request);
                        log.lock().expect("log").push((path, request.clone()));
                        let response = respond(&review, answer);
                        let body = response.to_string();
                        let _ = write!(
                            tls,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = tls.flush();
                        tls.conn.send_close_notify();
                        let _ = tls.flush();
                    }
                });
            }
        });
        Webhook {
            port,
            ca_bundle: base64::engine::general_purpose::STANDARD.encode(ca.pem()),
            seen,
        }
    }

    /// A ValidatingWebhookConfiguration `name` sending every ConfigMap
    /// create to this webhook's `/validate` (timeoutSeconds 10, the default).
    pub fn validating_configmap_creates(&self, name: &str) -> String {
        format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\n\
             metadata: {{name: {name}}}\nwebhooks:\n- name: {name}.kelp.test\n  \
             clientConfig: {{url: \"https://127.0.0.1:{}/validate\", caBundle: {}}}\n  \
             rules: [{{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [configmaps]}}]\n  \
             timeoutSeconds: 10\n  sideEffects: None\n  admissionReviewVersions: [v1]\n",
            self.port, self.ca_bundle
        )
    }

    /// Operations seen on `path` for objects named `name`.
    pub fn operations(&self, path: &str, name: &str) -> Vec<String> {
        self.seen
            .lock()
            .expect("log")
            .iter()
            .filter(|(p, r)| p.starts_with(path) && r["name"] == name)
            .map(|(_, r)| r["operation"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// Reads one HTTP/1.1 request: its path and body.
fn read_request(stream: &mut impl Read) -> Option<(String, Vec<u8>)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, body))
}

fn respond(review: &Value, answer: Answer) -> Value {
    let mut response = json!({"uid": review["request"]["uid"]});
    match answer {
        Answer::Allow { patch, warnings } => {
            response["allowed"] = json!(true);
            response["warnings"] = json!(warnings);
            if let Some(patch) = patch {
                response["patchType"] = json!("JSONPatch");
                response["patch"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(patch.to_string()));
            }
        }
        Answer::Deny(status) => {
            response["allowed"] = json!(false);
            response["status"] = status;
        }
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}
