//! Join tokens: the server's own (made or taken from `--token` at start,
//! kept in `<data-dir>/server/token` as k3s does) and `kelp token
//! create|list|delete|generate` (kubeadm's bootstrap tokens, through the
//! running server with the admin kubeconfig, printed in k3s's secure form).

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::TokenCommand;
use crate::apiserver::ApiState;
use crate::apiserver::handlers;
use crate::pki::bootstrap_token::{self, BootstrapToken, JoinToken, TokenSpec};
use crate::pki::write_file_mode;

/// The credentials a `--token` value stands for, refusing a `K10…` token
/// of another cluster.
fn credentials_of(text: &str, ca_pem: &str, flag: &str) -> Result<String> {
    let token = JoinToken::parse(text).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    if let Some(hash) = &token.ca_hash
        && !bootstrap_token::pins_cluster_ca(hash, ca_pem)
    {
        bail!("{flag}: the token's CA hash is not this cluster's CA (a token of another cluster?)");
    }
    Ok(token.credentials)
}

/// Makes sure the server's join token (and the agent token, if asked for)
/// exist as bootstrap token Secrets, and writes them to
/// `<server_dir>/token` and `agent-token` in the secure form.
pub async fn ensure_server_tokens(
    state: &ApiState,
    server_dir: &Path,
    token: Option<String>,
    agent_token: Option<String>,
) -> Result<()> {
    let ca = state.config.ca_pem.clone();
    let file = server_dir.join("token");
    let credentials = match token {
        Some(text) => credentials_of(&text, &ca, "--token")?,
        None => match std::fs::read_to_string(&file) {
            Ok(text) => credentials_of(&text, &ca, &file.display().to_string())?,
            Err(_) => BootstrapToken::generate().to_string(),
        },
    };
    let mut tokens = vec![(file, credentials, "the server's join token")];
    if let Some(text) = agent_token {
        tokens.push((
            server_dir.join("agent-token"),
            credentials_of(&text, &ca, "--agent-token")?,
            "the agent join token",
        ));
    }
    for (file, credentials, description) in tokens {
        let token = BootstrapToken::from_credentials(&credentials);
        let secret = bootstrap_token::secret(
            &token,
            &TokenSpec {
                description: format!("{description} ({})", file.display()),
                expiration: None,
                usages: vec!["authentication".into(), "signing".into()],
                groups: vec![bootstrap_token::DEFAULT_NODE_GROUP.into()],
            },
        );
        store_token_secret(state, &token, secret).await?;
        write_file_mode(
            &file,
            &format!("{}\n", JoinToken::secure(&ca, &credentials)),
            0o600,
        )?;
    }
    Ok(())
}

/// Creates the token's Secret, or replaces one that holds another secret.
async fn store_token_secret(
    state: &ApiState,
    token: &BootstrapToken,
    mut secret: Value,
) -> Result<()> {
    let name = token.secret_name();
    let req = handlers::system_request(state, "", "secrets", Some("kube-system"), Some(&name))
        .context("secrets are not served")?;
    match handlers::load(state, &req).await {
        Ok((old, kv)) => {
            if bootstrap_token::authenticate(token, &old, chrono::Utc::now()).is_ok() {
                return Ok(());
            }
            let mut new = old.clone();
            new["data"] = secret["data"].take();
            new["type"] = secret["type"].take();
            handlers::update::write_update(state, &req, new, &old, kv.mod_revision, false)
                .await
                .map_err(|e| anyhow::anyhow!("updating the join token secret {name}: {e}"))?;
        }
        Err(_) => {
            let create = handlers::system_request(state, "", "secrets", Some("kube-system"), None)
                .context("secrets are not served")?;
            handlers::create::create_object(state, &create, &mut secret)
                .await
                .map_err(|e| anyhow::anyhow!("creating the join token secret {name}: {e}"))?;
        }
    }
    Ok(())
}

/// Runs a `kelp token` subcommand.
pub fn run(command: TokenCommand) -> Result<()> {
    if let TokenCommand::Generate = command {
        println!("{}", BootstrapToken::generate());
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting runtime")?;
    runtime.block_on(remote(command))
}

const SECRETS: &str = "/api/v1/namespaces/kube-system/secrets";

async fn remote(command: TokenCommand) -> Result<()> {
    let kubeconfig = super::remote::admin_kubeconfig();
    let call = |method: &'static str, path: String, body: String| {
        let kubeconfig = kubeconfig.clone();
        async move {
            let (code, text) = super::remote::call(&kubeconfig, method, &path, &body).await?;
            let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if !(200..300).contains(&code) {
                bail!(
                    "the server answered {code}: {}",
                    answer["message"].as_str().unwrap_or(&text)
                );
            }
            Ok(answer)
        }
    };
    match command {
        TokenCommand::Create {
            token,
            ttl,
            description,
            usages,
            groups,
        } => {
            let token = match token {
                Some(text) => BootstrapToken::parse(&text).with_context(|| {
                    format!("{text:?} is not a token of the form [a-z0-9]{{6}}.[a-z0-9]{{16}}")
                })?,
                None => BootstrapToken::generate(),
            };
            for usage in &usages {
                anyhow::ensure!(
                    usage == "authentication" || usage == "signing",
                    "unknown usage {usage:?}: authentication, signing"
                );
            }
            for group in &groups {
                anyhow::ensure!(
                    bootstrap_token::valid_group(group),
                    "group {group:?} must start with system:bootstrappers: and be [a-z0-9:-]"
                );
            }
            let expiration = match ttl.as_str() {
                "0" | "0s" => None,
                text => Some(
                    chrono::Utc::now() + super::parse_duration(text).map_err(anyhow::Error::msg)?,
                ),
            };
            let secret = bootstrap_token::secret(
                &token,
                &TokenSpec {
                    description,
                    expiration,
                    usages,
                    groups,
                },
            );
            call("POST", SECRETS.into(), secret.to_string()).await?;
            // /cacerts is PEM, not JSON: fetched raw.
            let (_, ca_pem) =
                super::remote::call(&kubeconfig, "GET", crate::apiserver::join::CACERTS_PATH, "")
                    .await?;
            println!("{}", JoinToken::secure(&ca_pem, &token.to_string()));
        }
        TokenCommand::List => {
            let list = call("GET", SECRETS.into(), String::new()).await?;
            println!(
                "{:<8}{:<12}{:<22}{:<26}{:<28}EXTRA GROUPS",
                "TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION"
            );
            let tokens = list["items"].as_array().into_iter().flatten();
            for secret in tokens.filter(|s| s["type"] == bootstrap_token::SECRET_TYPE) {
                let id = crate::pki::secret_data(secret, "token-id").unwrap_or_default();
                let (ttl, expires) = match bootstrap_token::expiration(secret) {
                    None => ("<forever>".to_string(), "<never>".to_string()),
                    Some(at) => {
                        let left = (at - chrono::Utc::now()).num_seconds().max(0);
                        (
                            human(left),
                            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        )
                    }
                };
                let usages: Vec<&str> = ["authentication", "signing"]
                    .into_iter()
                    .filter(|u| {
                        crate::pki::secret_data(secret, &format!("usage-bootstrap-{u}")).as_deref()
                            == Some("true")
                    })
                    .collect();
                println!(
                    "{:<8}{:<12}{:<22}{:<26}{:<28}{}",
                    id,
                    ttl,
                    expires,
                    usages.join(","),
                    crate::pki::secret_data(secret, "description")
                        .unwrap_or_else(|| "<none>".into()),
                    crate::pki::secret_data(secret, "auth-extra-groups").unwrap_or_default()
                );
            }
        }
        TokenCommand::Delete { tokens } => {
            for text in tokens {
                let id = match text.split_once('.') {
                    Some((id, _)) => id.rsplit("::").next().unwrap_or(id).to_string(),
                    None => text.clone(),
                };
                anyhow::ensure!(
                    id.len() == 6
                        && id
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
                    "{text:?} is neither a token id nor a token"
                );
                call(
                    "DELETE",
                    format!("{SECRETS}/{}{id}", bootstrap_token::SECRET_PREFIX),
                    String::new(),
                )
                .await?;
                println!("bootstrap token {id:?} deleted");
            }
        }
        TokenCommand::Generate => unreachable!("handled without a server"),
    }
    Ok(())
}

/// `23h`, `59m`, `30s`, as kubeadm prints lifetimes.
fn human(seconds: i64) -> String {
    match seconds {
        s if s >= 86400 => format!("{}d", s / 86400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
