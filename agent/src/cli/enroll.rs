//! `edgefn-agent enroll --cloud URL --token T`: enrolls this device with the cloud and stores
//! the device id, credential and root key in `<data_dir>/cloud.json` (mode 0600). A running
//! agent picks the enrollment up at its next start.

use std::path::PathBuf;
use std::process::ExitCode;

use edgefn_agent::paths;
use edgefn_agent::sync::{ClientError, CloudClient, Enrollment};
use edgefn_cloud::protocol::keycert::decode_public;
use edgefn_cloud::protocol::verify_key_cert;
use serde_json::json;

use super::output::{fields, json_document, out};
use super::{EXIT_FUNCTION, EXIT_USAGE};

#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    /// The cloud's URL (https://HOST:PORT, or http:// on a trusted network).
    #[arg(long, value_name = "URL", env = "EDGEFN_CLOUD")]
    cloud: String,
    /// The one-time enrollment token (`edgefn device enroll NAME`).
    #[arg(long, value_name = "TOKEN")]
    token: String,
    /// Data directory [default: $EDGEFN_DATA_DIR, /var/lib/edgefn if it exists, else
    /// ./edgefn-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// PEM CA certificate(s) to trust for the cloud [default: the system's].
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Enroll again although the data directory holds an enrollment (replaces it).
    #[arg(long)]
    force: bool,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

fn fail(code: u8, message: impl std::fmt::Display) -> anyhow::Result<ExitCode> {
    eprintln!("error: {message}");
    Ok(ExitCode::from(code))
}

pub fn run(args: EnrollArgs) -> anyhow::Result<ExitCode> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(paths::default_data_dir);
    match Enrollment::load(&data_dir) {
        Ok(Some(e)) if !args.force => {
            return fail(
                EXIT_USAGE,
                format!(
                    "{} is already enrolled as device {} ({}) with {}; --force enrolls again",
                    data_dir.display(),
                    e.device_id,
                    e.device_name,
                    e.cloud
                ),
            )
        }
        Ok(_) => {}
        Err(e) if !args.force => return fail(EXIT_USAGE, e),
        Err(_) => {}
    }
    if let Some(ca) = &args.ca_file {
        if !ca.is_file() {
            return fail(
                EXIT_USAGE,
                format!("--ca-file {}: no such file", ca.display()),
            );
        }
    }
    let ca = args
        .ca_file
        .as_ref()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()));
    let client = match CloudClient::new(&args.cloud, ca.as_deref(), None) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    let response = match client.enroll(args.token.trim()) {
        Ok(r) => r,
        Err(ClientError::Refused {
            status: 401,
            message,
            ..
        }) => {
            return fail(
                EXIT_FUNCTION,
                format!(
                    "the cloud refused the token: {message} (tokens are one-time and valid 24 h; \
                     make a new one with `edgefn device enroll NAME`)"
                ),
            )
        }
        Err(e @ ClientError::Refused { .. }) => return fail(EXIT_FUNCTION, e),
        Err(e) => return fail(EXIT_USAGE, e),
    };
    // The root key is the trust anchor: it must parse, and the keys it came with must verify.
    let root = match decode_public(&response.root_public_key) {
        Ok(k) => k,
        Err(e) => return fail(EXIT_USAGE, format!("the cloud's root key is unusable: {e}")),
    };
    let now = edgefn_cloud::now_ms();
    let mut key_ids = Vec::new();
    for cert in &response.keys {
        match verify_key_cert(cert, &root, now) {
            Ok((id, _)) => key_ids.push(id),
            Err(e) => eprintln!("warning: a signing key certificate does not verify: {e}"),
        }
    }
    use std::os::unix::fs::DirBuilderExt;
    let made = if data_dir.is_dir() {
        Ok(())
    } else {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&data_dir)
    };
    if let Err(e) = made {
        return fail(
            EXIT_USAGE,
            format!(
                "cannot create the data directory {}: {e}",
                data_dir.display()
            ),
        );
    }
    let enrollment = Enrollment::from_response(&args.cloud, ca, response);
    let path = match enrollment.save(&data_dir) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    if args.json {
        json_document(&json!({
            "device_id": enrollment.device_id,
            "device_name": enrollment.device_name,
            "cloud": enrollment.cloud,
            "groups": enrollment.groups,
            "keys": key_ids,
            "root_public_key": enrollment.root_public_key,
            "file": path,
        }))?;
    } else {
        out(&fields(&[
            ("device", enrollment.device_id.clone()),
            ("name", enrollment.device_name.clone()),
            ("cloud", enrollment.cloud.clone()),
            ("groups", enrollment.groups.join(", ")),
            ("signing keys", key_ids.join(", ")),
            ("root key", enrollment.root_public_key.clone()),
            ("stored in", path.display().to_string()),
        ]))?;
        eprintln!("enrolled; `edgefn-agent run` syncs with the cloud from its next start");
    }
    Ok(ExitCode::SUCCESS)
}
