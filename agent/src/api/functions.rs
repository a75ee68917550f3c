//! `/v1/functions...`: the function lifecycle and aliases.

use super::{blocking, ApiError, AppState};
use crate::spec::FunctionSpec;
use crate::store::{AliasInfo, AliasTarget, FunctionDetail, FunctionSummary, Origin, VersionInfo};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: String,
    module_base64: String,
    spec: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    module_base64: Option<String>,
    spec: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    description: Option<String>,
}

/// The Function document of docs/agent-api.md.
#[derive(Serialize)]
pub struct Function {
    name: String,
    enabled: bool,
    origin: Origin,
    created_ms: i64,
    updated_ms: i64,
    latest: Latest,
    versions: Vec<VersionInfo>,
    aliases: Vec<AliasInfo>,
    kv: crate::store::KvUsage,
}

#[derive(Serialize)]
struct Latest {
    sha256: String,
    size: u64,
    spec: String,
}

impl From<FunctionDetail> for Function {
    fn from(d: FunctionDetail) -> Function {
        Function {
            latest: Latest {
                sha256: d.summary.latest_sha256,
                size: d.summary.latest_size,
                spec: d.latest_spec,
            },
            name: d.summary.name,
            enabled: d.summary.enabled,
            origin: d.summary.origin,
            created_ms: d.summary.created_ms,
            updated_ms: d.summary.updated_ms,
            versions: d.versions,
            aliases: d.aliases,
            kv: d.kv,
        }
    }
}

/// Decodes and validates a module upload (Wasm + ABI v1), so a bad module never reaches the store.
fn module(state: &AppState, b64: &str) -> Result<Vec<u8>, ApiError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| ApiError::bad_request(format!("module_base64 is not valid base64: {e}")))?;
    state
        .runtime
        .load(&bytes)
        .map_err(|e| ApiError::invalid(format!("bad module: {e}")))?;
    Ok(bytes)
}

fn spec(text: Option<&str>) -> Result<(), ApiError> {
    match text {
        Some(t) => FunctionSpec::parse(t)
            .map(|_| ())
            .map_err(|e| ApiError::invalid(e.to_string())),
        None => Ok(()),
    }
}

pub async fn create(
    State(s): State<AppState>,
    Json(b): Json<CreateBody>,
) -> Result<(StatusCode, Json<Function>), ApiError> {
    spec(b.spec.as_deref())?;
    let bytes = module(&s, &b.module_base64)?;
    let d = s.daemon.clone();
    let f = blocking(move || {
        d.store().create_function(
            &b.name,
            &bytes,
            b.spec.as_deref().unwrap_or(""),
            Origin::Local,
        )?;
        d.store().get_function(&b.name)
    })
    .await?;
    prewarm(&s, f.summary.name.clone());
    Ok((StatusCode::CREATED, Json(f.into())))
}

pub async fn update(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Json(b): Json<UpdateBody>,
) -> Result<Json<Function>, ApiError> {
    if b.module_base64.is_none() && b.spec.is_none() {
        return Err(ApiError::bad_request(
            "nothing to update: give module_base64 and/or spec",
        ));
    }
    spec(b.spec.as_deref())?;
    let bytes = b
        .module_base64
        .as_deref()
        .map(|m| module(&s, m))
        .transpose()?;
    let d = s.daemon.clone();
    let f = blocking(move || {
        d.store()
            .update_function(&name, bytes.as_deref(), b.spec.as_deref())?;
        d.invalidate(&name);
        d.store().get_function(&name)
    })
    .await?;
    prewarm(&s, f.summary.name.clone());
    Ok(Json(f.into()))
}

pub async fn publish(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Option<Json<PublishBody>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let description = body.and_then(|Json(b)| b.description).unwrap_or_default();
    let d = s.daemon.clone();
    let p = blocking(move || d.store().publish(&name, &description)).await?;
    Ok(Json(
        serde_json::json!({"version": p.version, "created": p.created}),
    ))
}

pub async fn list(State(s): State<AppState>) -> Result<Json<Vec<FunctionSummary>>, ApiError> {
    let d = s.daemon.clone();
    Ok(Json(blocking(move || d.store().list_functions()).await?))
}

pub async fn get(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Function>, ApiError> {
    let d = s.daemon.clone();
    Ok(Json(
        blocking(move || d.store().get_function(&name))
            .await?
            .into(),
    ))
}

pub async fn get_version(
    State(s): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<VersionInfo>, ApiError> {
    let v = parse_version(&version)?;
    let d = s.daemon.clone();
    Ok(Json(
        blocking(move || d.store().get_version(&name, v)).await?,
    ))
}

pub async fn delete(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let d = s.daemon.clone();
    blocking(move || {
        d.store().delete_function(&name)?;
        d.invalidate(&name);
        Ok::<_, crate::store::StoreError>(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete_version(
    State(s): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let v = parse_version(&version)?;
    let d = s.daemon.clone();
    let n = name.clone();
    blocking(move || {
        d.store().delete_version(&n, v)?;
        d.invalidate(&n);
        Ok::<_, crate::store::StoreError>(())
    })
    .await?;
    prewarm(&s, name);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn enable(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Function>, ApiError> {
    set_enabled(s, name, true).await
}

pub async fn disable(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Function>, ApiError> {
    set_enabled(s, name, false).await
}

async fn set_enabled(s: AppState, name: String, enabled: bool) -> Result<Json<Function>, ApiError> {
    let d = s.daemon.clone();
    let f = blocking(move || {
        d.store().set_enabled(&name, enabled)?;
        if !enabled {
            // Free the instances of a disabled function.
            d.invalidate(&name);
        }
        d.store().get_function(&name)
    })
    .await?;
    if enabled {
        prewarm(&s, f.summary.name.clone());
    }
    Ok(Json(f.into()))
}

pub async fn set_alias(
    State(s): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
    Json(target): Json<AliasTarget>,
) -> Result<Json<AliasInfo>, ApiError> {
    let d = s.daemon.clone();
    let n = name.clone();
    let a = blocking(move || d.store().set_alias(&n, &alias, &target)).await?;
    prewarm(&s, name);
    Ok(Json(a))
}

pub async fn list_aliases(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<AliasInfo>>, ApiError> {
    let d = s.daemon.clone();
    Ok(Json(blocking(move || d.store().list_aliases(&name)).await?))
}

pub async fn delete_alias(
    State(s): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let d = s.daemon.clone();
    blocking(move || d.store().delete_alias(&name, &alias)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Keeps `name`'s `min_instances` warm after a change (create, update, enable, alias, version
/// deletion), in the background: the answer does not wait for instances to start.
fn prewarm(s: &AppState, name: String) {
    let d = s.daemon.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = d.prewarm_function(&name) {
            // Deleted or disabled meanwhile: nothing to keep warm.
            if !matches!(e, crate::store::StoreError::UnknownFunction(_)) {
                eprintln!("edgefn-agent: prewarming {name} failed: {e}");
            }
        }
    });
}

fn parse_version(text: &str) -> Result<u32, ApiError> {
    text.parse::<u32>().ok().filter(|v| *v > 0).ok_or_else(|| {
        ApiError::bad_request(format!("version must be a positive number, not {text:?}"))
    })
}
