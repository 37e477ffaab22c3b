//! `kelp secrets-encrypt status|rotate-keys`: asks the running server (with
//! the admin kubeconfig) and prints what it says, as k3s's command does.

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::SecretsEncryptCommand;
use crate::apiserver::secrets_encryption::{ROTATE_PATH, STATUS_PATH};

/// Runs one subcommand against the server the admin kubeconfig names.
pub fn run(command: SecretsEncryptCommand) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting runtime")?;
    let kubeconfig = super::remote::admin_kubeconfig();
    let (method, path) = match command {
        SecretsEncryptCommand::Status => ("GET", STATUS_PATH),
        SecretsEncryptCommand::RotateKeys => ("POST", ROTATE_PATH),
    };
    let (code, body) = runtime.block_on(super::remote::call(&kubeconfig, method, path, ""))?;
    let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if code != 200 {
        let message = answer["message"].as_str().unwrap_or(&body);
        bail!("the server answered {code}: {message}");
    }
    let text = |key: &str| answer[key].as_str().unwrap_or("").to_string();
    let number = |key: &str| answer[key].as_u64().unwrap_or(0);
    match command {
        SecretsEncryptCommand::Status if answer["enabled"] == true => {
            println!("Encryption Status: Enabled");
            println!("Active Key: {}", text("activeKey"));
            println!("Secrets under the active key: {}", number("current"));
            println!(
                "Secrets under older keys or unencrypted: {}",
                number("stale")
            );
        }
        SecretsEncryptCommand::Status => println!("Encryption Status: Disabled"),
        SecretsEncryptCommand::RotateKeys => {
            println!("keys rotated: active key {}", text("activeKey"));
            println!("secrets re-encrypted: {}", number("reencrypted"));
        }
    }
    Ok(())
}
