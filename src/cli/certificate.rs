//! `kelp certificate`: set leaf certificates aside, or replace the cluster
//! CA, for the next start to issue new ones (k3s's `certificate rotate` and
//! `rotate-ca`; the server is stopped meanwhile).

use anyhow::Result;

use super::CertificateCommand;

/// Runs a `kelp certificate` subcommand.
pub fn run(command: CertificateCommand) -> Result<()> {
    match command {
        CertificateCommand::Rotate { services, data_dir } => {
            let backup = crate::pki::rotate(&data_dir.join("server/tls"), &services)?;
            println!(
                "certificates set aside (backup in {}); restart kelp to issue new ones",
                backup.display()
            );
        }
        CertificateCommand::RotateCa { data_dir } => {
            let backup = crate::pki::rotate_ca(&data_dir.join("server/tls"))?;
            println!(
                "new cluster CA written, cross-signed by the current one (backup in {}); restart kelp to issue certificates under it. Clients and nodes that trust the current CA keep working; new join tokens carry the new CA's hash (kelp token create).",
                backup.display()
            );
        }
    }
    Ok(())
}
