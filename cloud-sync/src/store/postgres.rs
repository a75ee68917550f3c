//! The PostgreSQL backend: a small pool of synchronous clients (run on tokio's blocking pool),
//! `SERIALIZABLE` transactions retried on serialization failures, so replicas sharing one
//! database never interleave badly.
//!
//! `?schema=NAME` in the URL (removed before connecting) puts every table in schema `NAME`,
//! created if missing: tests give each server a schema of its own in the shared `test` database.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use ::postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use ::postgres::{Client, IsolationLevel, NoTls};

use super::error::StoreError;
use super::schema::{statements, MIGRATIONS, POSTGRES_ONLY};
use super::value::{Row, Value};
use super::Tx;

/// Most attempts of one transaction before giving up (with [`MAX_BACKOFF`], at most ~2 s of
/// pauses in all).
const MAX_ATTEMPTS: u32 = 40;
/// Longest pause between two attempts of a transaction.
const MAX_BACKOFF: Duration = Duration::from_millis(50);
/// Most idle connections kept.
const POOL_SIZE: usize = 8;
/// Most connections open at once (more transactions wait for one).
const MAX_OPEN: usize = 16;

pub struct PgDb {
    url: String,
    schema: Option<String>,
    idle: Mutex<Vec<Client>>,
    /// Connections handed out or idle, and a condition to wait for one.
    open: Mutex<usize>,
    freed: Condvar,
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT4 => (*i as i32).to_sql(ty, out),
                Type::INT2 => (*i as i16).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Value::Real(f) => f.to_sql(ty, out),
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

fn read_row(r: &::postgres::Row) -> Result<Row, StoreError> {
    let mut values = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let v = match *col.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v as i64)),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v as i64)),
            Type::BOOL => r
                .try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v as i64)),
            Type::FLOAT8 => r.try_get::<_, Option<f64>>(i)?.map(Value::Real),
            Type::FLOAT4 => r
                .try_get::<_, Option<f32>>(i)?
                .map(|v| Value::Real(v as f64)),
            Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            _ => r.try_get::<_, Option<String>>(i)?.map(Value::Text),
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

struct PgTx<'a>(::postgres::Transaction<'a>);

fn refs(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl Tx for PgTx<'_> {
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        let rows = self.0.query(sql, &refs(params))?;
        rows.iter().map(read_row).collect()
    }
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        Ok(self.0.execute(sql, &refs(params))?)
    }
}

/// Splits `?schema=NAME` off the URL.
fn split_schema(url: &str) -> Result<(String, Option<String>), StoreError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut schema = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.strip_prefix("schema=") {
            Some(s) => schema = Some(s.to_owned()),
            None => rest.push(pair),
        }
    }
    if let Some(s) = &schema {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(StoreError::Config(format!(
                "bad schema name {s:?}: use [A-Za-z0-9_]"
            )));
        }
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, schema))
}

impl PgDb {
    pub fn open(url: &str) -> Result<PgDb, StoreError> {
        let (url, schema) = split_schema(url)?;
        let db = PgDb {
            url,
            schema,
            idle: Mutex::new(Vec::new()),
            open: Mutex::new(0),
            freed: Condvar::new(),
        };
        drop(db.connect()?); // fail early on a bad URL
        Ok(db)
    }

    fn connect(&self) -> Result<Client, StoreError> {
        let mut client = Client::connect(&self.url, NoTls)
            .map_err(|e| StoreError::Config(format!("cannot connect to PostgreSQL: {e}")))?;
        if let Some(schema) = &self.schema {
            client.batch_execute(&format!("SET search_path TO {schema}"))?;
        }
        Ok(client)
    }

    fn take(&self) -> Result<Client, StoreError> {
        loop {
            let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match pooled {
                Some(c) if !c.is_closed() => return Ok(c),
                Some(_) => self.release_slot(),
                None => {}
            }
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            if *open < MAX_OPEN {
                *open += 1;
                drop(open);
                return self.connect().inspect_err(|_| self.release_slot());
            }
            // Wait for a connection to come back (or a slot to free up).
            let _ = self.freed.wait_timeout(open, Duration::from_millis(100));
        }
    }

    fn release_slot(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        *open = open.saturating_sub(1);
        self.freed.notify_one();
    }

    fn give_back(&self, client: Client) {
        if client.is_closed() {
            self.release_slot();
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < POOL_SIZE {
            idle.push(client);
            drop(idle);
            self.freed.notify_one();
        } else {
            drop(idle);
            drop(client);
            self.release_slot();
        }
    }

    pub fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.take()?;
        // One migrator at a time across replicas (an advisory lock held by this transaction).
        let mut tx = client.transaction()?;
        tx.batch_execute("SELECT pg_advisory_xact_lock(7346199)")?;
        if let Some(schema) = &self.schema {
            tx.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}; SET LOCAL search_path TO {schema}"
            ))?;
        }
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
        let current: i64 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])?
            .get(0);
        for (i, m) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            for s in statements(m) {
                tx.batch_execute(s)?;
            }
            for (_, s) in POSTGRES_ONLY.iter().filter(|(n, _)| *n == i + 1) {
                tx.batch_execute(s)?;
            }
            tx.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&(i as i64 + 1)],
            )?;
        }
        tx.commit()?;
        self.give_back(client);
        Ok(())
    }

    pub fn tx<T>(&self, f: &dyn Fn(&mut dyn Tx) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.run(IsolationLevel::Serializable, false, f)
    }

    pub fn read<T>(
        &self,
        f: &dyn Fn(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.run(IsolationLevel::RepeatableRead, true, f)
    }

    /// Runs `f` in a transaction, again after a serialization failure or deadlock
    /// ([`StoreError::Retry`]) up to [`MAX_ATTEMPTS`] times, with a random pause before each
    /// new attempt ([`backoff`]) so that colliding transactions do not collide again in step.
    fn run<T>(
        &self,
        isolation: IsolationLevel,
        read_only: bool,
        f: &dyn Fn(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut client = self.take()?;
            let result = (|| {
                let tx = client
                    .build_transaction()
                    .isolation_level(isolation)
                    .read_only(read_only)
                    .start()?;
                let mut t = PgTx(tx);
                let out = f(&mut t)?;
                t.0.commit()?;
                Ok(out)
            })();
            self.give_back(client);
            match result {
                Err(StoreError::Retry(_)) if attempt < MAX_ATTEMPTS => {
                    std::thread::sleep(backoff(attempt));
                }
                Err(StoreError::Retry(e)) => {
                    return Err(StoreError::Retry(format!(
                        "{e} (gave up after {MAX_ATTEMPTS} attempts)"
                    )))
                }
                other => return other,
            }
        }
    }
}

/// The pause before attempt `attempt + 1`: uniformly random in `[0, min(MAX_BACKOFF, 1 ms x
/// 2^attempt))` ("full jitter").
fn backoff(attempt: u32) -> Duration {
    let cap = MAX_BACKOFF.min(Duration::from_millis(1u64 << attempt.min(16)));
    let mut r = [0u8; 8];
    let random = match getrandom::fill(&mut r) {
        Ok(()) => u64::from_le_bytes(r),
        Err(_) => u64::from(attempt).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    };
    Duration::from_micros(random % (cap.as_micros() as u64).max(1))
}

impl Drop for PgDb {
    /// A synchronous client closes its connection with a `block_on` of its own, which panics
    /// on a thread that drives a tokio runtime (where the last `Store` clone may be dropped):
    /// close them on a thread of their own.
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|p| p.into_inner()));
        if !idle.is_empty() {
            let _ = std::thread::Builder::new()
                .name("pg-close".into())
                .spawn(move || drop(idle));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{backoff, split_schema, MAX_BACKOFF};
    use std::time::Duration;

    #[test]
    fn pauses_between_attempts_grow_and_stay_bounded() {
        for attempt in 1..60 {
            let cap = MAX_BACKOFF.min(Duration::from_millis(1 << attempt.min(16)));
            for _ in 0..20 {
                assert!(backoff(attempt) < cap, "attempt {attempt}");
            }
        }
        // Random: 20 pauses of one attempt are not all the same.
        let pauses: std::collections::HashSet<_> = (0..20).map(|_| backoff(10)).collect();
        assert!(pauses.len() > 1);
    }

    #[test]
    fn the_schema_parameter_is_split_off() {
        let (url, schema) = split_schema("postgres://h/db?schema=t_1&sslmode=disable").unwrap();
        assert_eq!(url, "postgres://h/db?sslmode=disable");
        assert_eq!(schema.as_deref(), Some("t_1"));
        assert!(split_schema("postgres://h/db?schema=a;drop").is_err());
    }
}
