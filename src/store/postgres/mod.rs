//! The fleet store on PostgreSQL: where the server is, its schema and migrations, and moving a
//! task stack in and out of it.
//!
//! One database holds one task queue, in the schema `orchestrator`. Schema versions are the
//! embedded migrations, applied in order by `fleet init` in one transaction under an advisory
//! lock (two machines running it at once apply each migration once); every other use checks the
//! version first and refuses a database that is older (run `fleet init`) or newer (an older
//! binary must not write a schema it does not know).
//!
//! The server's own reference for what is used here: connection URLs and `connect_timeout`
//! (<https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-CONNSTRING>), `json` keeping its
//! input text (<https://www.postgresql.org/docs/15/datatype-json.html>), advisory locks
//! (<https://www.postgresql.org/docs/15/functions-admin.html#FUNCTIONS-ADVISORY-LOCKS>).

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use postgres::error::SqlState;
use postgres::{Client, Config, IsolationLevel, NoTls, Transaction};
use serde_json::Value;
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use crate::core::stack::{StoreSettings, TaskStack};
use crate::error::Failure;

pub mod pool;
mod queue;
mod workspace;
pub use queue::{Claimed, FleetEvent, FleetSession, Origin, UnfinishedStart};

/// The migrations, oldest first: the schema's version is how many have been applied.
const MIGRATIONS: &[&str] = &[include_str!("0001_queue.sql")];
/// The schema version this binary reads and writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;
/// Any fixed key: `fleet init` holds this advisory lock while it migrates.
const MIGRATION_LOCK: i64 = 0x6f72_6368_6573_7472; // "orchestr"
/// How long connecting, and then any one statement, may take unless the settings say otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the store's URL came from, so that an error can say which to fix.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub url: String,
    pub source: String,
    pub timeout: Duration,
}

impl Target {
    /// The URL without its password: what messages show.
    pub fn display(&self) -> String {
        redact(&self.url)
    }
}

/// The store a command uses: `--store URL` (or `ORCHESTRATOR_STORE`) first, else the stack's
/// `settings.store.postgres.url_env`; `None` is the file store.
pub fn target(flag: Option<&str>, settings: Option<&StoreSettings>) -> Result<Option<Target>> {
    let timeout = settings
        .and_then(|s| s.postgres.as_ref())
        .and_then(|pg| pg.timeout_seconds)
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    if let Some(url) = flag.filter(|url| !url.is_empty()) {
        if url == "file" {
            return Ok(None);
        }
        check_url(url, "--store (or ORCHESTRATOR_STORE)")?;
        return Ok(Some(Target {
            url: url.to_string(),
            source: "--store (or ORCHESTRATOR_STORE)".into(),
            timeout,
        }));
    }
    let Some(pg) = settings.and_then(|s| s.postgres.as_ref()) else {
        return Ok(None);
    };
    let source = format!("${} (settings.store.postgres.url_env)", pg.url_env);
    let url = std::env::var(&pg.url_env).map_err(|_| {
        Failure::user(format!(
            "settings.store.postgres.url_env names ${}, which is not set: export the server's URL in it",
            pg.url_env
        ))
    })?;
    check_url(&url, &source)?;
    Ok(Some(Target {
        url,
        source,
        timeout,
    }))
}

fn check_url(url: &str, source: &str) -> Result<()> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(Failure::user(format!(
            "{source}: `{}` is not a PostgreSQL URL (postgresql://user@host/db) or `file`",
            redact(url)
        )));
    }
    Config::from_str(url).map_err(|err| {
        Failure::user(format!(
            "{source}: `{}` is not a valid URL: {err}",
            redact(url)
        ))
    })?;
    Ok(())
}

/// A URL with the password between `:` and `@` of its authority replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// A connection to the fleet store.
pub struct PgStore {
    client: Client,
    target: Target,
    /// Whether this connection has seen the schema's version: [`PgStore::check_schema`], or the
    /// stack's load, which reads it in the same statement (one round trip fewer per command).
    schema_checked: bool,
}

/// A connection through the pool in `dir`, or why not within `bound`. The client's
/// `connect_timeout` covers only reaching the socket, and a pool that accepts and then never
/// answers (stopped, wedged) must cost no more than the timeout: the attempt runs on a thread
/// of its own, left behind if it takes longer.
fn connect_through_pool(
    config: &Config,
    dir: &std::path::Path,
    bound: Duration,
) -> std::result::Result<Client, String> {
    let pooled = through_pool(config, dir);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("pool-connect".into())
        .spawn(move || {
            let _ = tx.send(pooled.connect(NoTls));
        })
        .map_err(|err| format!("no thread to connect on: {err}"))?;
    match rx.recv_timeout(bound) {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(err)) => Err(one_line(&err)),
        Err(_) => Err(format!("no answer within {} s", bound.as_secs_f64())),
    }
}

/// `config` with the pool's socket in `dir` as its only host: the same user, password,
/// database, options and timeouts.
fn through_pool(config: &Config, dir: &std::path::Path) -> Config {
    let mut pooled = Config::new();
    pooled.host_path(dir).port(pool::SOCKET_PORT);
    if let Some(user) = config.get_user() {
        pooled.user(user);
    }
    if let Some(password) = config.get_password() {
        pooled.password(password);
    }
    if let Some(dbname) = config.get_dbname() {
        pooled.dbname(dbname);
    }
    if let Some(options) = config.get_options() {
        pooled.options(options);
    }
    if let Some(name) = config.get_application_name() {
        pooled.application_name(name);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        pooled.connect_timeout(*timeout);
    }
    pooled
}

/// What `fleet init` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub from: i32,
    pub to: i32,
}

impl PgStore {
    /// Connects within the target's timeout; every statement afterwards is bounded by it too
    /// (`statement_timeout`), so a command never hangs on a server that stopped answering.
    pub fn connect(target: &Target) -> Result<PgStore> {
        let mut config = Config::from_str(&target.url)
            .with_context(|| format!("{}: not a valid URL", target.source))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(target.timeout);
        }
        let statement_ms = target.timeout.as_millis();
        let options = match config.get_options() {
            Some(options) => format!("{options} -c statement_timeout={statement_ms}"),
            None => format!("-c statement_timeout={statement_ms}"),
        };
        config.options(&options);
        config.application_name("orchestrator");
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        if let Some(dir) = pool::from_env() {
            let bound = config
                .get_connect_timeout()
                .copied()
                .unwrap_or(target.timeout);
            match connect_through_pool(&config, &dir, bound) {
                Ok(client) => {
                    return Ok(PgStore {
                        client,
                        target: target.clone(),
                        schema_checked: false,
                    });
                }
                Err(why) => tracing::debug!(
                    "the pool in {} did not serve this command ({why}): connecting directly",
                    dir.display()
                ),
            }
        }
        let client = config.connect(NoTls).map_err(|err| {
            Failure::unreachable(format!(
                "cannot reach the fleet store {} (from {}): {}",
                target.display(),
                target.source,
                one_line(&err)
            ))
        })?;
        Ok(PgStore {
            client,
            target: target.clone(),
            schema_checked: false,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Creates or upgrades the schema to [`SCHEMA_VERSION`]; a current schema is left as it is.
    pub fn migrate(&mut self) -> Result<Migrated> {
        let display = self.target.display();
        let mut tx = self.client.transaction().map_err(|e| sql(&display, e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(|e| sql(&display, e))?;
        tx.batch_execute(
            "CREATE SCHEMA IF NOT EXISTS orchestrator;
             CREATE TABLE IF NOT EXISTS orchestrator.schema_version (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now(),
                 applied_by text NOT NULL
             );",
        )
        .map_err(|e| sql(&display, e))?;
        let from = applied_version(&mut tx, &display)?;
        if from > SCHEMA_VERSION {
            return Err(newer_schema(&display, from));
        }
        let by = format!("orchestrator {}", env!("CARGO_PKG_VERSION"));
        for (version, migration) in (from + 1..).zip(&MIGRATIONS[from as usize..]) {
            tx.batch_execute(migration).map_err(|e| sql(&display, e))?;
            tx.execute(
                "INSERT INTO orchestrator.schema_version (version, applied_by) VALUES ($1, $2)",
                &[&version, &by],
            )
            .map_err(|e| sql(&display, e))?;
        }
        tx.commit().map_err(|e| sql(&display, e))?;
        Ok(Migrated {
            from,
            to: SCHEMA_VERSION,
        })
    }

    /// Refuses a database whose schema is missing, older or newer than this binary's.
    pub fn check_schema(&mut self) -> Result<()> {
        let display = self.target.display();
        let version = match self
            .client
            // Typed: no statement to prepare and close, one round trip on every connection.
            .query_typed("SELECT max(version) FROM orchestrator.schema_version", &[])
        {
            Ok(rows) => rows
                .first()
                .and_then(|row| row.get::<_, Option<i32>>(0))
                .unwrap_or(0),
            Err(err) if err.code() == Some(&SqlState::UNDEFINED_TABLE) => 0,
            Err(err) => return Err(sql(&display, err)),
        };
        self.accept_schema(version)
    }

    /// Refuses a schema version other than this binary's; remembers one that is.
    fn accept_schema(&mut self, version: i32) -> Result<()> {
        let display = self.target.display();
        if version > SCHEMA_VERSION {
            return Err(newer_schema(&display, version));
        }
        if version < SCHEMA_VERSION {
            return Err(Failure::user(format!(
                "the fleet store {display} has schema version {version}, this binary needs {SCHEMA_VERSION}: run `orchestrator fleet init`"
            )));
        }
        self.schema_checked = true;
        Ok(())
    }

    /// Puts a stack in the store: its top level and every task, in one transaction. An empty
    /// store takes it; one that holds tasks only with `replace`, and never while a lease in it is
    /// live (its session would lose its claim). A replaced task keeps its fencing token, so a
    /// token handed out before can never be valid again.
    pub fn import(
        &mut self,
        stack: &TaskStack,
        replace: bool,
        now: DateTime<Utc>,
    ) -> Result<Imported> {
        self.check_schema()?;
        let display = self.target.display();
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::Serializable)
            .start()
            .map_err(|e| sql(&display, e))?;
        tx.batch_execute(
            "LOCK TABLE orchestrator.stack, orchestrator.task IN ACCESS EXCLUSIVE MODE",
        )
        .map_err(|e| sql(&display, e))?;
        let held: i64 = tx
            .query_one("SELECT count(*) FROM orchestrator.task", &[])
            .map_err(|e| sql(&display, e))?
            .get(0);
        if held > 0 && !replace {
            return Err(Failure::user(format!(
                "the fleet store {display} already holds {held} tasks: `fleet import --replace` replaces them"
            )));
        }
        let live: Vec<String> = tx
            .query(
                "SELECT id FROM orchestrator.task WHERE lease_expires_at > $1 ORDER BY position",
                &[&now],
            )
            .map_err(|e| sql(&display, e))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if !live.is_empty() {
            return Err(Failure::busy(format!(
                "the fleet store {display} has live sessions on {}: wrap them before replacing the stack",
                live.join(", ")
            )));
        }
        let tokens: HashMap<String, i64> = tx
            .query("SELECT id, fencing_token FROM orchestrator.task", &[])
            .map_err(|e| sql(&display, e))?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        tx.batch_execute("DELETE FROM orchestrator.task")
            .map_err(|e| sql(&display, e))?;
        let top = top_level_json(stack);
        tx.execute(
            "INSERT INTO orchestrator.stack (singleton, doc, revision) VALUES (true, $1::text::json, 1)
             ON CONFLICT (singleton) DO UPDATE
             SET doc = excluded.doc, revision = orchestrator.stack.revision + 1, updated_at = now()",
            &[&top],
        )
        .map_err(|e| sql(&display, e))?;
        let insert = tx
            .prepare(
                "INSERT INTO orchestrator.task
                 (id, position, status, priority, doc, fencing_token, lease_session, lease_expires_at)
                 VALUES ($1, $2, $3, $4, $5::text::json, $6, $7, $8)",
            )
            .map_err(|e| sql(&display, e))?;
        for (position, task) in stack.tasks.iter().enumerate() {
            let doc = serde_json::to_string(task).context("serializing a task")?;
            let token = tokens.get(&task.id).copied().unwrap_or(0);
            let (session, expires) = task
                .claim
                .as_ref()
                .map(|c| (Some(c.session.clone()), Some(c.lease_expires)))
                .unwrap_or((None, None));
            tx.execute(
                &insert,
                &[
                    &task.id,
                    &(position as i32),
                    &task.status.as_str(),
                    &task.priority,
                    &doc,
                    &token,
                    &session,
                    &expires,
                ],
            )
            .map_err(|e| sql(&display, e))?;
        }
        tx.commit().map_err(|e| sql(&display, e))?;
        Ok(Imported {
            tasks: stack.tasks.len(),
            replaced: held as usize,
        })
    }

    /// The stack as one consistent snapshot of the store, in the order it was imported.
    pub fn export(&mut self) -> Result<TaskStack> {
        self.check_schema()?;
        let mut stack = self.load_stack(None)?;
        stack.loaded = crate::core::stack::Loaded::default();
        Ok(stack)
    }
}

/// What `fleet import` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub tasks: usize,
    pub replaced: usize,
}

/// The stack's top level without its tasks, in the stack file's key order.
fn top_level_json(stack: &TaskStack) -> String {
    let mut value = serde_json::to_value(stack).expect("a task stack always serializes");
    if let Value::Object(map) = &mut value {
        map.insert("tasks".into(), Value::Array(Vec::new()));
    }
    value.to_string()
}

fn applied_version(tx: &mut Transaction<'_>, display: &str) -> Result<i32> {
    let row = tx
        .query_one("SELECT max(version) FROM orchestrator.schema_version", &[])
        .map_err(|e| sql(display, e))?;
    Ok(row.get::<_, Option<i32>>(0).unwrap_or(0))
}

fn newer_schema(display: &str, version: i32) -> anyhow::Error {
    Failure::user(format!(
        "the fleet store {display} has schema version {version}, newer than this binary's {SCHEMA_VERSION}: upgrade orchestrator on this machine"
    ))
}

/// A server error as one line naming the store: what the server said, or why it could not say.
/// A lost connection, a server shutting down or a statement past its timeout is exit 6 (run
/// it again; the transaction did not happen); anything else the server refused is exit 1.
fn sql(display: &str, err: postgres::Error) -> anyhow::Error {
    let message = format!("the fleet store {display}: {}", one_line(&err));
    let gone = match err.code() {
        None => true,
        Some(code) => {
            *code == SqlState::QUERY_CANCELED
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || code.code().starts_with("08")
        }
    };
    if gone {
        Failure::unreachable(message)
    } else {
        Failure::user(message)
    }
}

/// The fleet store of a workspace whose settings (or `--store`) name one: connected at its
/// first use, its schema checked then, the connection kept for the rest of the command.
pub struct Fleet {
    target: Target,
    store: std::sync::Mutex<Option<PgStore>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("target", &self.target.display())
            .finish()
    }
}

impl Fleet {
    pub fn new(target: Target) -> Fleet {
        Fleet {
            target,
            store: std::sync::Mutex::new(None),
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Runs `op` on the connection, connecting first if needed, on a schema of this binary's
    /// version. A connection that failed is dropped, so the next use connects again (the
    /// server may have restarted).
    pub fn with<T>(&self, op: impl FnOnce(&mut PgStore) -> Result<T>) -> Result<T> {
        self.run(true, op)
    }

    /// [`Fleet::with`] for an `op` that loads the stack first, which checks the schema's
    /// version in its own statement.
    pub fn with_load<T>(&self, op: impl FnOnce(&mut PgStore) -> Result<T>) -> Result<T> {
        self.run(false, op)
    }

    fn run<T>(&self, check: bool, op: impl FnOnce(&mut PgStore) -> Result<T>) -> Result<T> {
        let mut guard = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(PgStore::connect(&self.target)?);
        }
        let store = guard.as_mut().expect("connected above");
        if check && !store.schema_checked {
            let checked = store.check_schema();
            if store.client.is_closed() {
                *guard = None;
            }
            checked?;
        }
        let store = guard.as_mut().expect("connected above");
        let result = op(store);
        if store.client.is_closed() {
            *guard = None;
        }
        result
    }
}

fn one_line(err: &postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text.replace('\n', " ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::stack::PostgresSettings;
    use serde_json::Map;

    #[test]
    fn the_password_never_shows() {
        assert_eq!(
            redact("postgresql://fleet:s3cret@db.example:5432/queue?sslmode=disable"),
            "postgresql://fleet:***@db.example:5432/queue?sslmode=disable"
        );
        assert_eq!(
            redact("postgresql://fleet@db.example/queue"),
            "postgresql://fleet@db.example/queue"
        );
        assert_eq!(
            redact("postgresql://a:b@%2Ftmp%2Fpg/queue"),
            "postgresql://a:***@%2Ftmp%2Fpg/queue"
        );
    }

    #[test]
    fn the_flag_wins_and_file_means_the_file_store() {
        let settings = StoreSettings {
            postgres: Some(PostgresSettings {
                url_env: "ORCHESTRATOR_TEST_UNSET_URL_ENV".into(),
                timeout_seconds: Some(3),
                extra: Map::new(),
            }),
            extra: Map::new(),
        };
        let t = target(Some("postgresql://u@h/db"), Some(&settings))
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.url.as_str(), t.timeout),
            ("postgresql://u@h/db", Duration::from_secs(3))
        );
        assert_eq!(target(Some("file"), Some(&settings)).unwrap(), None);
        assert_eq!(target(None, None).unwrap(), None);
        let unset = target(None, Some(&settings)).unwrap_err().to_string();
        assert!(
            unset.contains("$ORCHESTRATOR_TEST_UNSET_URL_ENV"),
            "{unset}"
        );
        let bad = target(Some("mysql://u@h/db"), None)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("not a PostgreSQL URL"), "{bad}");
    }

    #[test]
    fn migrations_are_numbered_by_position() {
        assert_eq!(SCHEMA_VERSION as usize, MIGRATIONS.len());
        assert!(MIGRATIONS[0].contains("CREATE TABLE orchestrator.task"));
    }
}
