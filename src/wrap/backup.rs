//! Verified SQLite backups for `orchestrator wrap`, plus the read-only
//! metric readings that go into the markdown handoff.
//!
//! A backup is a consistent snapshot of the live database taken while other
//! processes may keep writing to it (WAL or rollback-journal mode). It is
//! written to a clearly temporary file in the backup directory, checked with
//! `PRAGMA quick_check`, fsynced, and only then given its final name.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, NaiveDateTime, Utc};
use rusqlite::{Connection, ErrorCode, OpenFlags, types::ValueRef};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

/// How long any of our connections waits for a lock held by another
/// connection (e.g. a writer committing) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The part between the database file name and the timestamp.
const BACKUP_INFIX: &str = ".backup_";

/// Between the final name and the pid in a backup's temp file name.
const TEMP_INFIX: &str = ".tmp-";

/// Timestamp format used in backup file names.
const STAMP_FORMAT: &str = "%Y%m%d_%H%M%S";

/// Length of a timestamp formatted with [`STAMP_FORMAT`].
const STAMP_LEN: usize = 15;

/// Progress is shown only for backups running longer than this.
const PROGRESS_DELAY: Duration = Duration::from_millis(500);

/// `PRAGMA mmap_size` for reading the source and verifying the copy
/// (SQLite caps it at its compile-time maximum, 2 GB by default).
const MMAP_SIZE: i64 = 1 << 40;

/// "<db-file-name>.backup_<YYYYMMDD_HHMMSS>", e.g.
/// "crypto.db.backup_20251106_001355".
pub fn backup_file_name(db_path: &Path, at: DateTime<Utc>) -> String {
    format!(
        "{}{BACKUP_INFIX}{}",
        db_file_name(db_path),
        at.format(STAMP_FORMAT)
    )
}

/// What [`backup_database`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupOutcome {
    /// Final path of the verified backup.
    pub path: PathBuf,
    /// Size of the backup file in bytes.
    pub bytes: u64,
}

/// Writes a consistent snapshot of `db` to `backup_dir/final_name`.
///
/// The snapshot is copied page by page (online backup API, one step) from a
/// read-only connection, into `backup_dir/.<final_name>.tmp-<pid>`; the copy
/// must pass `PRAGMA quick_check`, is fsynced, and is then moved to its final
/// name (never overwriting an existing file) and the directory fsynced. On any
/// error the temporary file is removed and nothing exists under the final
/// name. When `show_progress` is true, long backups report progress on stderr.
pub fn backup_database(
    db: &Path,
    backup_dir: &Path,
    final_name: &str,
    show_progress: bool,
) -> Result<BackupOutcome> {
    check_final_name(final_name)?;
    check_backup_dir(backup_dir)?;
    let final_path = backup_dir.join(final_name);
    if final_path.symlink_metadata().is_ok() {
        bail!(
            "backup {} already exists; refusing to overwrite it",
            final_path.display()
        );
    }

    let started = Instant::now();
    let source = open_source(db)?;
    let expected_bytes = snapshot_bytes(&source).unwrap_or(0);

    let temp = TempFile::create(
        backup_dir.join(format!(".{final_name}{TEMP_INFIX}{}", std::process::id())),
    )?;
    debug!(
        db = %db.display(),
        temp = %temp.path.display(),
        expected_bytes,
        "starting database backup"
    );

    let progress = show_progress
        .then(|| {
            let (watched, label) = (temp.path.clone(), db_file_name(db));
            crate::progress::Bar::start(
                expected_bytes,
                PROGRESS_DELAY,
                move |done| progress_line(&label, done, expected_bytes),
                move || fs::metadata(&watched).map(|m| m.len()).unwrap_or(0),
            )
        })
        .flatten();
    let copied = snapshot_into(&source, &temp.path);
    drop(progress);
    copied.with_context(|| {
        format!(
            "cannot back up {} into directory {}",
            db.display(),
            backup_dir.display()
        )
    })?;
    drop(source);

    // Verify and fsync in parallel: quick_check is CPU-bound on the page
    // cache, fsync waits for the disk.
    let (checked, synced) = thread::scope(|scope| {
        let sync = scope.spawn(|| File::open(&temp.path).and_then(|f| f.sync_all()));
        let checked = quick_check(&temp.path);
        let synced = sync
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("fsync thread panicked")));
        (checked, synced)
    });
    checked.with_context(|| {
        format!(
            "backup copy {} of {} failed verification",
            temp.path.display(),
            db.display()
        )
    })?;
    synced.with_context(|| format!("cannot fsync backup copy {}", temp.path.display()))?;

    let bytes = fs::metadata(&temp.path)
        .with_context(|| format!("cannot stat backup copy {}", temp.path.display()))?
        .len();
    publish(&temp.path, &final_path)?;
    if let Err(err) = sync_dir(backup_dir) {
        // The contract is "nothing under the final name on error".
        let _ = fs::remove_file(&final_path);
        return Err(err);
    }
    drop(temp);

    info!(
        db = %db.display(),
        backup = %final_path.display(),
        bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "database backup written and verified"
    );
    Ok(BackupOutcome {
        path: final_path,
        bytes,
    })
}

/// Removes the temp copies (and their -journal/-wal/-shm) that a killed backup of `db_path`
/// left in `backup_dir`. Only call while no backup of this database can be running.
///
/// The backup directory may be the user's own disk, shared with other files: only the exact
/// names [`backup_database`] creates are removed, never a look-alike.
pub fn remove_stale_temp_files(backup_dir: &Path, db_path: &Path) -> Vec<PathBuf> {
    let db_name = db_file_name(db_path);
    let Ok(entries) = fs::read_dir(backup_dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_backup_temp_name(name, &db_name) && fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// Whether `name` is `.<db_name>.backup_<stamp>.tmp-<pid>`, optionally with the `-journal`,
/// `-wal` or `-shm` that SQLite keeps beside it.
fn is_backup_temp_name(name: &str, db_name: &str) -> bool {
    let Some((final_name, tail)) = name
        .strip_prefix('.')
        .and_then(|n| n.rsplit_once(TEMP_INFIX))
    else {
        return false;
    };
    let pid = ["-journal", "-wal", "-shm"]
        .iter()
        .find_map(|suffix| tail.strip_suffix(suffix))
        .unwrap_or(tail);
    !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && parse_backup_stamp(final_name, db_name).is_some()
}

/// Runs `PRAGMA quick_check` on an existing backup file (e.g. when a killed
/// wrap is resumed and its backup file already exists).
pub fn verify_backup(path: &Path) -> Result<()> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => bail!("backup {} is not a regular file", path.display()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            bail!("backup {} does not exist", path.display())
        }
        Err(err) => return Err(anyhow!(err).context(format!("cannot stat {}", path.display()))),
    }
    quick_check(path).with_context(|| format!("backup {} failed verification", path.display()))?;
    debug!(backup = %path.display(), "backup passed quick_check");
    Ok(())
}

/// Keeps the newest `keep` backups of `db_path` in `backup_dir` (newest by the
/// timestamp in the name; `keep` is raised to at least 1 so the backup just
/// made always survives) and removes the older ones. Only regular files named
/// exactly "<db-file-name>.backup_YYYYMMDD_HHMMSS" are considered; anything
/// else is never touched. Returns the removed paths.
pub fn prune_backups(backup_dir: &Path, db_path: &Path, keep: usize) -> Result<Vec<PathBuf>> {
    let db_name = db_file_name(db_path);
    let entries = fs::read_dir(backup_dir)
        .with_context(|| format!("cannot list backup directory {}", backup_dir.display()))?;

    let mut backups: Vec<(NaiveDateTime, String)> = Vec::new();
    for entry in entries {
        let entry = entry
            .with_context(|| format!("cannot list backup directory {}", backup_dir.display()))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(stamp) = parse_backup_stamp(&name, &db_name) else {
            continue;
        };
        // `file_type` does not follow symlinks: only real files are pruned.
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file {
            backups.push((stamp, name));
        }
    }

    // Newest first; the name breaks ties so the order is deterministic.
    backups.sort_by(|a, b| b.cmp(a));
    let mut removed = Vec::new();
    for (_, name) in backups.into_iter().skip(keep.max(1)) {
        let path = backup_dir.join(&name);
        fs::remove_file(&path)
            .with_context(|| format!("cannot remove old backup {}", path.display()))?;
        info!(backup = %path.display(), "removed old backup");
        removed.push(path);
    }
    Ok(removed)
}

/// One metric of the handoff: a SQL query returning a single number.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricSpec {
    pub name: String,
    pub query: String,
    #[serde(default)]
    pub goal: Option<f64>,
}

/// The result of running one [`MetricSpec`]: either a value or an error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricReading {
    pub name: String,
    pub value: Option<f64>,
    pub error: Option<String>,
}

/// Runs each metric query on a read-only connection (with a busy timeout).
/// Each query must return one number (first column of the first row, integer
/// or real). A failing query yields a reading with `error` set and does not
/// stop the others; if the database cannot be opened at all, every reading
/// carries that error.
pub fn read_metrics(db: &Path, metrics: &[MetricSpec]) -> Vec<MetricReading> {
    let conn = match open_read_only(db) {
        Ok(conn) => conn,
        Err(err) => {
            let message = format!("{err:#}");
            warn!(db = %db.display(), error = %message, "cannot read metrics");
            return metrics
                .iter()
                .map(|m| MetricReading {
                    name: m.name.clone(),
                    value: None,
                    error: Some(message.clone()),
                })
                .collect();
        }
    };
    metrics
        .iter()
        .map(|metric| match run_metric(&conn, &metric.query) {
            Ok(value) => MetricReading {
                name: metric.name.clone(),
                value: Some(value),
                error: None,
            },
            Err(err) => {
                let message = format!("{err:#}");
                debug!(metric = %metric.name, error = %message, "metric query failed");
                MetricReading {
                    name: metric.name.clone(),
                    value: None,
                    error: Some(message),
                }
            }
        })
        .collect()
}

/// Formats a metric for the markdown handoff, e.g. value 23627, goal 30000,
/// baseline 19267 gives "23,627 (79% of 30,000, +4,360 since start)".
/// Without a goal the percentage is left out, without a baseline the growth.
pub fn describe_metric(value: f64, goal: Option<f64>, baseline: Option<f64>) -> String {
    let mut parts = Vec::new();
    if let Some(goal) = goal {
        if goal != 0.0 && goal.is_finite() && value.is_finite() {
            let percent = (value / goal * 100.0).round();
            parts.push(format!(
                "{}% of {}",
                format_number(percent),
                format_number(goal)
            ));
        } else {
            parts.push(format!("goal {}", format_number(goal)));
        }
    }
    if let Some(baseline) = baseline {
        let delta = format_number(value - baseline);
        let sign = if delta.starts_with('-') { "" } else { "+" };
        parts.push(format!("{sign}{delta} since start"));
    }
    let value = format_number(value);
    if parts.is_empty() {
        value
    } else {
        format!("{value} ({})", parts.join(", "))
    }
}

// ---------------------------------------------------------------------------
// Internals
// ---------------------------------------------------------------------------

/// The database's file name as text ("database" if the path has none).
fn db_file_name(db_path: &Path) -> String {
    db_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "database".to_owned())
}

/// The timestamp of `name` if it is exactly "<db_name>.backup_YYYYMMDD_HHMMSS".
fn parse_backup_stamp(name: &str, db_name: &str) -> Option<NaiveDateTime> {
    let stamp = name.strip_prefix(db_name)?.strip_prefix(BACKUP_INFIX)?;
    let well_formed = stamp.len() == STAMP_LEN
        && stamp
            .char_indices()
            .all(|(i, c)| if i == 8 { c == '_' } else { c.is_ascii_digit() });
    if !well_formed {
        return None;
    }
    NaiveDateTime::parse_from_str(stamp, STAMP_FORMAT).ok()
}

fn check_final_name(final_name: &str) -> Result<()> {
    let plain = !final_name.is_empty()
        && final_name != "."
        && final_name != ".."
        && !final_name.contains(['/', '\\', '\0']);
    if !plain {
        bail!("invalid backup file name {final_name:?}: must be a plain file name");
    }
    Ok(())
}

fn check_backup_dir(backup_dir: &Path) -> Result<()> {
    match fs::metadata(backup_dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => bail!(
            "backup directory {} is not a directory",
            backup_dir.display()
        ),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            bail!("backup directory {} does not exist", backup_dir.display())
        }
        Err(err) => Err(anyhow!(err).context(format!(
            "cannot access backup directory {}",
            backup_dir.display()
        ))),
    }
}

/// A SQLite error as one plain line (SQLite's message, without the
/// "Error code N: ..." source that `{:#}` would append).
fn plain(err: rusqlite::Error) -> anyhow::Error {
    anyhow!("{err}")
}

/// Turns a first-query failure into a clear message about the file.
fn describe_open_error(path: &Path, err: rusqlite::Error) -> anyhow::Error {
    if err.sqlite_error_code() == Some(ErrorCode::NotADatabase) {
        anyhow!("{} is not a SQLite database", path.display())
    } else {
        plain(err).context(format!("cannot read database {}", path.display()))
    }
}

/// Opens `path` read-only (no URI interpretation, so odd file names are taken
/// literally) and makes sure it really is a SQLite database: opening a
/// non-SQLite file succeeds, only the first read fails with SQLITE_NOTADB.
fn open_read_only(path: &Path) -> Result<Connection> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => bail!("database {} is not a regular file", path.display()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            bail!("database {} does not exist", path.display())
        }
        Err(err) => return Err(anyhow!(err).context(format!("cannot access {}", path.display()))),
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|err| describe_open_error(path, err))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|err| {
        plain(err).context(format!("cannot configure connection to {}", path.display()))
    })?;
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
        .map_err(|err| describe_open_error(path, err))?;
    Ok(conn)
}

/// Opens the database to back up so that it is never modified.
///
/// A read-only connection is enough in both journal modes: the backup only
/// reads the source. In WAL mode a reader also needs the `-shm` index; SQLite
/// opens the existing `-wal`/`-shm` files (read-only if need be) or, for an
/// idle WAL database, creates them itself, which works whenever the directory
/// is writable (covered by `backs_up_idle_wal_database_including_wal_contents`).
/// A read-write fallback would not help where that fails: it would need to
/// create the same files in the same directory.
fn open_source(db: &Path) -> Result<Connection> {
    open_read_only(db)
}

/// Size of the source's snapshot in bytes, used as the progress denominator.
fn snapshot_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let page_count: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    Ok((page_count * page_size).max(0) as u64)
}

/// Copies a consistent snapshot of `source` into the new file `dest`, using
/// SQLite's online backup API with a single `sqlite3_backup_step(-1)`.
///
/// Consistency: one step copies every page inside one read transaction on the
/// source. In WAL mode a writer keeps appending to the WAL behind our
/// snapshot; in rollback-journal mode it waits for our shared lock (its busy
/// timeout covers that). Backing up in small steps instead would release the
/// read transaction between steps and restart from scratch after every write
/// by another connection, i.e. never finish under a steady writer. Unlike a
/// file copy, the snapshot includes committed pages still in the `-wal` file.
///
/// Why not `VACUUM INTO`: it is just as consistent, but rebuilds every b-tree
/// and was 20-45% slower on a 1 GB database (page copy vs rebuild).
///
fn snapshot_into(source: &Connection, dest: &Path) -> Result<()> {
    let mut target = Connection::open_with_flags(
        dest,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(plain)?;
    target.busy_timeout(BUSY_TIMEOUT).map_err(plain)?;
    // Nobody else sees the temporary file and it is discarded on any failure,
    // so it needs no journal; durability comes from our own fsync after the
    // copy passed quick_check.
    let _: String = target
        .query_row("PRAGMA journal_mode=OFF", [], |r| r.get(0))
        .map_err(plain)?;
    target
        .pragma_update(None, "synchronous", "OFF")
        .map_err(plain)?;
    // Reading the source memory-mapped saves one read() per page (~25% of
    // the copy time). SQLite's locking keeps this safe with concurrent
    // writers; the size is capped by SQLite's compile-time maximum.
    source
        .pragma_update(None, "mmap_size", MMAP_SIZE)
        .map_err(plain)?;

    run_backup_step_all(source, &mut target)?;

    // Page 1 is copied verbatim, so a WAL-mode source yields a copy flagged
    // as WAL. Switch the copy to rollback-journal mode so that opening a
    // backup later never needs (or leaves behind) -wal/-shm files.
    let mode: String = target
        .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
        .map_err(plain)?;
    if mode != "delete" {
        bail!("cannot switch the copy to rollback-journal mode (got {mode:?})");
    }
    target
        .close()
        .map_err(|(_, err)| plain(err).context("cannot close the copy"))?;
    Ok(())
}

/// One `step(-1)`: the whole copy under a single read transaction, which is what makes it a
/// consistent snapshot (small steps restart for ever under a steady writer). A busy step is
/// retried until [`BUSY_TIMEOUT`] has passed.
fn run_backup_step_all(source: &Connection, target: &mut Connection) -> Result<()> {
    use rusqlite::backup::{Backup, StepResult};

    let backup = Backup::new(source, target).map_err(plain)?;
    // The source's busy handler already waits up to BUSY_TIMEOUT for locks;
    // this loop only covers a BUSY that surfaces anyway.
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match backup.step(-1).map_err(plain)? {
            StepResult::Done => return Ok(()),
            StepResult::Busy | StepResult::Locked if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20));
            }
            other => bail!("the copy did not finish: {other:?}"),
        }
    }
}

/// `PRAGMA quick_check` on `path`; Ok only if it reports exactly "ok".
fn quick_check(path: &Path) -> Result<()> {
    let conn = open_read_only(path)?;
    // The copy is private to us (nobody writes or truncates it), so reading
    // it memory-mapped is safe; it makes the check ~30% faster.
    conn.pragma_update(None, "mmap_size", MMAP_SIZE)
        .map_err(plain)?;
    let mut stmt = conn.prepare("PRAGMA quick_check").map_err(plain)?;
    let problems: Vec<String> = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|err| describe_open_error(path, err))?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    let shown: Vec<&str> = problems.iter().take(3).map(String::as_str).collect();
    let more = problems.len().saturating_sub(shown.len());
    let mut message = format!("quick_check reported: {}", shown.join("; "));
    if more > 0 {
        message.push_str(&format!(" (and {more} more)"));
    }
    Err(anyhow!(message))
}

/// Gives the verified temporary copy its final name without ever replacing an
/// existing file: a hard link fails atomically if the name is taken. On
/// filesystems without hard links we fall back to check-then-rename.
fn publish(temp: &Path, final_path: &Path) -> Result<()> {
    let exists = || {
        anyhow!(
            "backup {} already exists; refusing to overwrite it",
            final_path.display()
        )
    };
    match fs::hard_link(temp, final_path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Err(exists()),
        Err(err) => {
            debug!(error = %err, "hard link failed; falling back to rename");
            if final_path.symlink_metadata().is_ok() {
                return Err(exists());
            }
            fs::rename(temp, final_path).with_context(|| {
                format!(
                    "cannot rename {} to {}",
                    temp.display(),
                    final_path.display()
                )
            })
        }
    }
}

/// Makes the new directory entry durable.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot fsync backup directory {}", dir.display()))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Removes the temporary backup file when dropped, whatever happened.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    /// Reserves `path`, removing a stale file of ours (same pid, e.g. left by
    /// a killed process whose pid was reused) so the copy starts empty.
    fn create(path: PathBuf) -> Result<Self> {
        match fs::remove_file(&path) {
            Ok(()) => debug!(temp = %path.display(), "removed stale temporary backup"),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(anyhow!(err).context(format!(
                    "cannot remove stale temporary backup {}",
                    path.display()
                )));
            }
        }
        Ok(Self { path })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // Also remove any side file SQLite may have left next to it.
        let side = |suffix: &str| {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            PathBuf::from(path)
        };
        let paths = [
            self.path.clone(),
            side("-journal"),
            side("-wal"),
            side("-shm"),
        ];
        for path in &paths {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    warn!(temp = %path.display(), error = %err, "cannot remove temporary file")
                }
            }
        }
    }
}

/// The text of the backup's progress bar: "backing up x.db: 1.2 GiB of 3.4 GiB (35%)", by the
/// size of the temporary file against the snapshot's.
fn progress_line(label: &str, done: u64, total: u64) -> String {
    if total == 0 {
        return format!("backing up {label}: {}", format_bytes(done));
    }
    // The copy can end up a little larger than the estimate; never show 100%
    // before the backup has actually finished.
    let percent = (done.saturating_mul(100) / total).min(99);
    format!(
        "backing up {label}: {} of {} ({percent}%)",
        format_bytes(done),
        format_bytes(total)
    )
}

fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Runs one metric query: read-only statement, first column of first row,
/// integer or real.
fn run_metric(conn: &Connection, query: &str) -> Result<f64> {
    let mut stmt = conn.prepare(query).map_err(plain)?;
    if !stmt.readonly() {
        bail!("query is not read-only");
    }
    let mut rows = stmt.query([]).map_err(plain)?;
    let row = rows
        .next()
        .map_err(plain)?
        .ok_or_else(|| anyhow!("query returned no rows"))?;
    match row.get_ref(0).map_err(plain)? {
        ValueRef::Integer(i) => Ok(i as f64),
        ValueRef::Real(r) => Ok(r),
        ValueRef::Null => bail!("query returned NULL"),
        ValueRef::Text(_) => bail!("query returned text, not a number"),
        ValueRef::Blob(_) => bail!("query returned a blob, not a number"),
    }
}

/// "23,627", "-1,234.5", "0.13": thousands separators, integral values
/// without decimals, others rounded to at most 2 decimals.
fn format_number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    // Round half away from zero (format! alone rounds ties to even).
    let fixed = format!("{:.2}", (value.abs() * 100.0).round() / 100.0);
    let fixed = fixed.trim_end_matches('0').trim_end_matches('.');
    let (int_part, frac_part) = fixed.split_once('.').unwrap_or((fixed, ""));
    let mut grouped = String::with_capacity(int_part.len() + int_part.len() / 3);
    for (i, digit) in int_part.chars().enumerate() {
        if i > 0 && (int_part.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let negative = value < 0.0 && (grouped != "0" || !frac_part.is_empty());
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    out.push_str(&grouped);
    if !frac_part.is_empty() {
        out.push('.');
        out.push_str(frac_part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn create_db(path: &Path, journal_mode: &str, rows: usize) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.busy_timeout(Duration::from_secs(30)).unwrap();
        let mode: String = conn
            .query_row(&format!("PRAGMA journal_mode={journal_mode}"), [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(mode, journal_mode.to_lowercase());
        conn.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, payload BLOB NOT NULL);
             CREATE TABLE counter(n INTEGER NOT NULL);
             INSERT INTO counter VALUES (0);",
        )
        .unwrap();
        conn.execute(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?1)
             INSERT INTO t(payload) SELECT randomblob(200) FROM s",
            [rows as i64],
        )
        .unwrap();
        conn.execute("UPDATE counter SET n = (SELECT count(*) FROM t)", [])
            .unwrap();
        conn
    }

    fn count_rows(path: &Path) -> i64 {
        let conn = Connection::open(path).unwrap();
        conn.busy_timeout(Duration::from_secs(30)).unwrap();
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    fn integrity_check(path: &Path) -> String {
        let conn = Connection::open(path).unwrap();
        conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap()
    }

    fn dir_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn temp_files(dir: &Path) -> Vec<String> {
        dir_names(dir)
            .into_iter()
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn stale_temp_files_of_a_killed_backup_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("crypto.db");
        for name in [
            ".crypto.db.backup_20200101_000000.tmp-42",
            ".crypto.db.backup_20200101_000000.tmp-42-journal",
            ".crypto.db.backup_20200101_000000.tmp-42-wal",
            "crypto.db.backup_20200101_000000",
            ".other.db.backup_20200101_000000.tmp-42",
            // A user's files that only look like ours.
            ".crypto.db.backup_mine.tmp-1",
            ".crypto.db.backup_20200101_000000.tmp-42.keep",
            ".crypto.db.backup_20200101_000000.tmp-",
        ] {
            fs::write(dir.path().join(name), "x").unwrap();
        }
        let removed = remove_stale_temp_files(dir.path(), &db);
        assert_eq!(removed.len(), 3);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".crypto.db.backup_20200101_000000.tmp-",
                ".crypto.db.backup_20200101_000000.tmp-42.keep",
                ".crypto.db.backup_mine.tmp-1",
                ".other.db.backup_20200101_000000.tmp-42",
                "crypto.db.backup_20200101_000000"
            ]
        );
    }

    #[test]
    fn backup_file_name_uses_db_file_name_and_utc_stamp() {
        let at = DateTime::parse_from_rfc3339("2025-11-06T00:13:55Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            backup_file_name(Path::new("/data/dir/crypto.db"), at),
            "crypto.db.backup_20251106_001355"
        );
        assert_eq!(
            backup_file_name(Path::new("crypto.db"), at),
            "crypto.db.backup_20251106_001355"
        );
    }

    #[test]
    fn backs_up_small_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("crypto.db");
        let backups = dir.path().join("backups");
        fs::create_dir(&backups).unwrap();
        let conn = create_db(&db, "DELETE", 500);
        conn.execute("INSERT INTO t(payload) VALUES (x'0102')", [])
            .unwrap();
        drop(conn);
        let before = fs::read(&db).unwrap();

        let name = "crypto.db.backup_20251106_001355";
        let outcome = backup_database(&db, &backups, name, false).unwrap();

        assert_eq!(outcome.path, backups.join(name));
        assert_eq!(outcome.bytes, fs::metadata(&outcome.path).unwrap().len());
        assert!(outcome.bytes > 0);
        assert_eq!(dir_names(&backups), vec![name.to_owned()]);
        assert_eq!(integrity_check(&outcome.path), "ok");
        assert_eq!(count_rows(&outcome.path), 501);
        let src = Connection::open(&db).unwrap();
        let copy = Connection::open(&outcome.path).unwrap();
        let dump = |c: &Connection| -> Vec<(i64, Vec<u8>)> {
            let mut stmt = c.prepare("SELECT id, payload FROM t ORDER BY id").unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        assert_eq!(dump(&src), dump(&copy));
        // The source was only read.
        assert_eq!(fs::read(&db).unwrap(), before);
        verify_backup(&outcome.path).unwrap();
    }

    #[test]
    fn backs_up_idle_wal_database_including_wal_contents() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("wal.db");
        let conn = create_db(&db, "WAL", 100);
        // Keep the writes in the -wal file: no checkpoint, connection open.
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute("INSERT INTO t(payload) VALUES (x'ff')", [])
            .unwrap();
        assert!(fs::metadata(dir.path().join("wal.db-wal")).unwrap().len() > 0);

        let backups = tempfile::tempdir().unwrap();
        let out = backup_database(&db, backups.path(), "wal.db.backup_x", false).unwrap();
        assert_eq!(count_rows(&out.path), 101);
        assert_eq!(integrity_check(&out.path), "ok");
        drop(conn);

        // Also with no connection open at all (no -wal/-shm present yet).
        let out2 = backup_database(&db, backups.path(), "wal.db.backup_y", false).unwrap();
        assert_eq!(count_rows(&out2.path), 101);
        // The copy is a self-contained rollback-journal database: opening it
        // later does not need (or create) -wal/-shm files.
        let header = fs::read(&out2.path).unwrap();
        assert_eq!((header[18], header[19]), (1, 1));
        assert!(temp_files(backups.path()).is_empty());
    }

    /// Backs up `rounds` times while a writer thread commits without pause.
    /// Each writer transaction inserts a row and bumps `counter.n`, so a torn
    /// snapshot would show `count(t) != counter.n`.
    fn backup_under_live_writer(journal_mode: &str, rounds: usize) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("live.db");
        let backups = dir.path().join("backups");
        fs::create_dir(&backups).unwrap();
        drop(create_db(&db, journal_mode, 20_000));

        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let db = db.clone();
            let stop = Arc::clone(&stop);
            thread::spawn(move || -> rusqlite::Result<u64> {
                let conn = Connection::open(&db)?;
                conn.busy_timeout(Duration::from_secs(60))?;
                conn.pragma_update(None, "synchronous", "OFF")?;
                let mut commits = 0;
                while !stop.load(Ordering::Relaxed) {
                    conn.execute_batch(
                        "BEGIN IMMEDIATE;
                         INSERT INTO t(payload) VALUES (randomblob(200));
                         UPDATE counter SET n = n + 1;
                         COMMIT;",
                    )?;
                    commits += 1;
                }
                Ok(commits)
            })
        };

        let reader = Connection::open(&db).unwrap();
        reader.busy_timeout(Duration::from_secs(60)).unwrap();
        let read_count = || -> i64 {
            reader
                .query_row("SELECT n FROM counter", [], |r| r.get(0))
                .unwrap()
        };
        // Wait until the writer is really running.
        let initial = read_count();
        let wait_start = Instant::now();
        while read_count() == initial {
            assert!(
                wait_start.elapsed() < Duration::from_secs(30),
                "writer never wrote"
            );
            thread::sleep(Duration::from_millis(1));
        }

        let mut grew_during_backup = 0;
        let mut copy_counts = Vec::new();
        for round in 0..rounds {
            let name = format!("live.db.backup_{round}");
            let before = read_count();
            let started = Instant::now();
            let out = backup_database(&db, &backups, &name, false)
                .unwrap_or_else(|e| panic!("{journal_mode} round {round}: {e:#}"));
            let elapsed = started.elapsed();
            let after = read_count();
            assert!(
                elapsed < Duration::from_secs(30),
                "{journal_mode} round {round}: backup took {elapsed:?}"
            );

            assert_eq!(integrity_check(&out.path), "ok");
            let copy = Connection::open(&out.path).unwrap();
            let rows: i64 = copy
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap();
            let counter: i64 = copy
                .query_row("SELECT n FROM counter", [], |r| r.get(0))
                .unwrap();
            assert_eq!(rows, counter, "{journal_mode} round {round}: torn snapshot");
            assert!(
                before <= rows && rows <= after,
                "{journal_mode} round {round}: {rows} not in {before}..={after}"
            );
            if after > before {
                grew_during_backup += 1;
            }
            copy_counts.push(rows);
            drop(copy);
            fs::remove_file(&out.path).unwrap();
        }

        stop.store(true, Ordering::Relaxed);
        let commits = writer.join().unwrap().unwrap();
        assert!(temp_files(&backups).is_empty());
        assert!(dir_names(&backups).is_empty());
        // The writer really wrote while we were backing up: the snapshots
        // keep moving and most backups overlapped with commits.
        assert!(commits > rounds as u64, "only {commits} commits");
        assert!(
            copy_counts.windows(2).all(|w| w[0] <= w[1])
                && copy_counts[0] < copy_counts[rounds - 1],
            "{journal_mode}: snapshots did not advance: {copy_counts:?}"
        );
        assert!(
            grew_during_backup * 2 >= rounds,
            "{journal_mode}: writer wrote during only {grew_during_backup} of {rounds} backups"
        );
    }

    #[test]
    fn consistent_backup_under_live_writer_wal() {
        backup_under_live_writer("WAL", 20);
    }

    #[test]
    fn consistent_backup_under_live_writer_rollback_journal() {
        backup_under_live_writer("DELETE", 20);
    }

    fn assert_failed_cleanly(backup_dir: &Path, final_name: &str) {
        assert!(backup_dir.join(final_name).symlink_metadata().is_err());
        if backup_dir.is_dir() {
            assert!(
                temp_files(backup_dir).is_empty(),
                "{:?}",
                dir_names(backup_dir)
            );
        }
    }

    #[test]
    fn missing_database_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("crypto.db");
        let err = backup_database(&db, dir.path(), "crypto.db.backup_1", false).unwrap_err();
        let msg = format!("{err:#}");
        assert_eq!(msg, format!("database {} does not exist", db.display()));
        assert_failed_cleanly(dir.path(), "crypto.db.backup_1");
        assert!(!db.exists(), "backup must not create the database");
    }

    #[test]
    fn non_sqlite_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("crypto.db");
        fs::write(
            &db,
            b"this is definitely not a database, just some text\n".repeat(200),
        )
        .unwrap();
        let before = fs::read(&db).unwrap();
        let err = backup_database(&db, dir.path(), "crypto.db.backup_1", false).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!("{} is not a SQLite database", db.display())
        );
        assert_failed_cleanly(dir.path(), "crypto.db.backup_1");
        assert_eq!(fs::read(&db).unwrap(), before);

        let err = verify_backup(&db).unwrap_err();
        assert!(
            format!("{err:#}").contains("is not a SQLite database"),
            "{err:#}"
        );
    }

    #[test]
    fn unusable_backup_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("crypto.db");
        drop(create_db(&db, "WAL", 10));

        let missing = dir.path().join("no-such-dir");
        let err = backup_database(&db, &missing, "b", false).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!("backup directory {} does not exist", missing.display())
        );
        assert!(!missing.exists());

        let file = dir.path().join("plain-file");
        fs::write(&file, b"x").unwrap();
        let err = backup_database(&db, &file, "b", false).unwrap_err();
        assert!(
            format!("{err:#}").contains(&file.display().to_string()),
            "{err:#}"
        );
        assert_eq!(fs::read(&file).unwrap(), b"x");

        // A directory nobody can create files in, not even root.
        #[cfg(target_os = "linux")]
        if Path::new("/proc/self").is_dir() {
            let proc_dir = Path::new("/proc/self");
            let err = backup_database(&db, proc_dir, "crypto.db.backup_1", false).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains("into directory /proc/self"), "{msg}");
            assert!(msg.contains("unable to open database file"), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
            assert!(!proc_dir.join("crypto.db.backup_1").exists());
        }

        // A read-only directory. Root ignores permission bits, so probe
        // first and only assert the failure when writes are really refused.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let ro = dir.path().join("read-only");
            fs::create_dir(&ro).unwrap();
            fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
            let writable = fs::write(ro.join("probe"), b"").is_ok();
            let _ = fs::remove_file(ro.join("probe"));
            let result = backup_database(&db, &ro, "crypto.db.backup_1", false);
            if writable {
                eprintln!("running as root: read-only directory cannot be tested");
                result.unwrap();
            } else {
                let msg = format!("{:#}", result.unwrap_err());
                assert!(msg.contains(&ro.display().to_string()), "{msg}");
                assert!(msg.contains("unable to open"), "{msg}");
                assert_failed_cleanly(&ro, "crypto.db.backup_1");
            }
            fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn existing_final_name_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("crypto.db");
        drop(create_db(&db, "DELETE", 10));
        let name = "crypto.db.backup_20251106_001355";
        let existing = dir.path().join(name);
        fs::write(&existing, b"older backup").unwrap();

        let err = backup_database(&db, dir.path(), name, false).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "backup {} already exists; refusing to overwrite it",
                existing.display()
            )
        );
        assert_eq!(fs::read(&existing).unwrap(), b"older backup");
        assert!(temp_files(dir.path()).is_empty());
    }

    #[test]
    fn publish_never_replaces_a_file_that_appears_late() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join(".b.tmp-1");
        let target = dir.path().join("b");
        fs::write(&temp, b"new").unwrap();
        fs::write(&target, b"old").unwrap();
        let err = publish(&temp, &target).unwrap_err();
        assert!(format!("{err:#}").contains("already exists"), "{err:#}");
        assert_eq!(fs::read(&target).unwrap(), b"old");
    }

    #[test]
    fn invalid_final_names_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("crypto.db");
        drop(create_db(&db, "DELETE", 1));
        for bad in ["", ".", "..", "../escape", "a/b"] {
            let err = backup_database(&db, dir.path(), bad, false).unwrap_err();
            assert!(
                format!("{err:#}").contains("invalid backup file name"),
                "{bad}: {err:#}"
            );
        }
        assert!(!dir.path().parent().unwrap().join("escape").exists());
    }

    #[test]
    fn verify_backup_reports_missing_and_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone.db.backup_20250101_000000");
        let err = verify_backup(&missing).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!("backup {} does not exist", missing.display())
        );

        // A database whose table b-tree pages are overwritten with garbage.
        let db = dir.path().join("corrupt.db");
        drop(create_db(&db, "DELETE", 2000));
        let good = backup_database(&db, dir.path(), "good", false).unwrap();
        verify_backup(&good.path).unwrap();
        let mut bytes = fs::read(&good.path).unwrap();
        let page_size = 4096;
        for b in &mut bytes[3 * page_size..8 * page_size] {
            *b = 0x5a;
        }
        fs::write(&good.path, &bytes).unwrap();
        let err = verify_backup(&good.path).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("failed verification"), "{msg}");
        assert!(msg.contains(&good.path.display().to_string()), "{msg}");
    }

    #[test]
    fn prune_keeps_newest_by_name_timestamp_and_ignores_others() {
        let dir = tempfile::tempdir().unwrap();
        let db = Path::new("/somewhere/crypto.db");
        let stamps = [
            "20251106_001355",
            "20240101_000000",
            "20251231_235959",
            "20250615_120000",
            "20251106_001354",
        ];
        for stamp in stamps {
            fs::write(dir.path().join(format!("crypto.db.backup_{stamp}")), b"").unwrap();
        }
        let unrelated = [
            "crypto.db",
            "crypto.db.backup_20200101_000000.bak",
            "crypto.db.backup_2020010_1000000",
            "crypto.db.backup_20201301_000000",
            "crypto.db.backup_latest",
            ".crypto.db.backup_20200101_000000.tmp-42",
            "other.db.backup_20200101_000000",
            "xcrypto.db.backup_20200101_000000",
            "notes.txt",
        ];
        for name in unrelated {
            fs::write(dir.path().join(name), b"keep me").unwrap();
        }
        fs::create_dir(dir.path().join("crypto.db.backup_20000101_000000")).unwrap();

        let mut removed = prune_backups(dir.path(), db, 2).unwrap();
        removed.sort();
        let expected: Vec<PathBuf> = ["20240101_000000", "20250615_120000", "20251106_001354"]
            .iter()
            .map(|s| dir.path().join(format!("crypto.db.backup_{s}")))
            .collect();
        assert_eq!(removed, expected);
        let left = dir_names(dir.path());
        assert!(left.contains(&"crypto.db.backup_20251231_235959".to_owned()));
        assert!(left.contains(&"crypto.db.backup_20251106_001355".to_owned()));
        for name in unrelated {
            assert!(left.contains(&name.to_owned()), "{name} was touched");
        }
        assert!(dir.path().join("crypto.db.backup_20000101_000000").is_dir());

        // keep = 0 still keeps the newest; nothing left to prune afterwards.
        let removed = prune_backups(dir.path(), db, 0).unwrap();
        assert_eq!(
            removed,
            vec![dir.path().join("crypto.db.backup_20251106_001355")]
        );
        assert!(prune_backups(dir.path(), db, 1).unwrap().is_empty());
        assert!(dir.path().join("crypto.db.backup_20251231_235959").exists());

        let err = prune_backups(&dir.path().join("missing"), db, 1).unwrap_err();
        assert!(format!("{err:#}").contains("missing"), "{err:#}");
    }

    fn metric(name: &str, query: &str) -> MetricSpec {
        MetricSpec {
            name: name.to_owned(),
            query: query.to_owned(),
            goal: None,
        }
    }

    #[test]
    fn read_metrics_reports_values_and_errors_per_query() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let conn = create_db(&db, "WAL", 42);
        conn.execute_batch("CREATE TABLE r(x REAL); INSERT INTO r VALUES (2.5), (NULL);")
            .unwrap();
        let readings = read_metrics(
            &db,
            &[
                metric("rows", "SELECT count(*) FROM t"),
                metric("bad", "SELEC nonsense"),
                metric("real", "SELECT sum(x) FROM r"),
                metric("null", "SELECT x FROM r WHERE x IS NULL"),
                metric("none", "SELECT 1 WHERE 0"),
                metric("text", "SELECT 'abc'"),
                metric("after_bad", "SELECT max(id) FROM t"),
            ],
        );
        let by_name = |n: &str| readings.iter().find(|r| r.name == n).unwrap().clone();
        assert_eq!(readings.len(), 7);
        assert_eq!(
            by_name("rows"),
            MetricReading {
                name: "rows".into(),
                value: Some(42.0),
                error: None
            }
        );
        assert_eq!(by_name("real").value, Some(2.5));
        assert_eq!(by_name("after_bad").value, Some(42.0));
        let bad = by_name("bad");
        assert_eq!(bad.value, None);
        assert!(bad.error.unwrap().contains("syntax error"));
        assert_eq!(
            by_name("null").error.as_deref(),
            Some("query returned NULL")
        );
        assert_eq!(
            by_name("none").error.as_deref(),
            Some("query returned no rows")
        );
        assert!(by_name("text").error.unwrap().contains("not a number"));
    }

    #[test]
    fn read_metrics_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        drop(create_db(&db, "DELETE", 10));
        let readings = read_metrics(
            &db,
            &[
                metric("delete", "DELETE FROM t"),
                metric("returning", "DELETE FROM t RETURNING 1"),
                metric("pragma", "PRAGMA user_version = 7"),
                metric("rows", "SELECT count(*) FROM t"),
            ],
        );
        for r in &readings[..3] {
            assert_eq!(r.value, None, "{r:?}");
            assert!(r.error.is_some(), "{r:?}");
        }
        assert_eq!(readings[3].value, Some(10.0));
        assert_eq!(count_rows(&db), 10);
        let conn = Connection::open(&db).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 0);

        // The connection itself refuses writes too, not just our check.
        let ro = open_read_only(&db).unwrap();
        assert!(ro.execute("DELETE FROM t", []).is_err());
        assert_eq!(count_rows(&db), 10);
    }

    #[test]
    fn read_metrics_on_unopenable_database_reports_error_for_every_metric() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.db");
        let specs = [metric("a", "SELECT 1"), metric("b", "SELECT 2")];
        let readings = read_metrics(&missing, &specs);
        let expected = format!("database {} does not exist", missing.display());
        assert_eq!(readings.len(), 2);
        for (r, s) in readings.iter().zip(&specs) {
            assert_eq!(r.name, s.name);
            assert_eq!(r.value, None);
            assert_eq!(r.error.as_deref(), Some(expected.as_str()));
        }
        assert!(
            !missing.exists(),
            "read_metrics must not create the database"
        );

        let junk = dir.path().join("junk.db");
        fs::write(&junk, vec![7u8; 8192]).unwrap();
        let readings = read_metrics(&junk, &specs);
        let expected = format!("{} is not a SQLite database", junk.display());
        assert!(
            readings
                .iter()
                .all(|r| r.error.as_deref() == Some(expected.as_str()))
        );
    }

    #[test]
    fn metric_spec_goal_defaults_to_none_in_json() {
        let spec: MetricSpec =
            serde_json::from_str(r#"{"name":"qa_pairs","query":"SELECT 1"}"#).unwrap();
        assert_eq!(spec.goal, None);
        let spec: MetricSpec =
            serde_json::from_str(r#"{"name":"q","query":"SELECT 1","goal":30000}"#).unwrap();
        assert_eq!(spec.goal, Some(30000.0));
    }

    #[test]
    fn describe_metric_formats_goal_and_growth() {
        assert_eq!(
            describe_metric(23627.0, Some(30000.0), Some(19267.0)),
            "23,627 (79% of 30,000, +4,360 since start)"
        );
        assert_eq!(
            describe_metric(23627.0, None, Some(19267.0)),
            "23,627 (+4,360 since start)"
        );
        assert_eq!(
            describe_metric(23627.0, Some(30000.0), None),
            "23,627 (79% of 30,000)"
        );
        assert_eq!(describe_metric(23627.0, None, None), "23,627");
        assert_eq!(
            describe_metric(88.0, None, Some(100.0)),
            "88 (-12 since start)"
        );
        assert_eq!(describe_metric(5.0, None, Some(5.0)), "5 (+0 since start)");
        assert_eq!(
            describe_metric(1234567.891, Some(1000000.0), Some(1234567.5)),
            "1,234,567.89 (123% of 1,000,000, +0.39 since start)"
        );
        assert_eq!(describe_metric(0.5, Some(2.0), None), "0.5 (25% of 2)");
        assert_eq!(describe_metric(-1500.25, None, None), "-1,500.25");
        assert_eq!(describe_metric(3.0, Some(0.0), None), "3 (goal 0)");
    }

    #[test]
    fn format_number_groups_thousands_and_rounds() {
        assert_eq!(format_number(0.0), "0");
        assert_eq!(format_number(-0.0), "0");
        assert_eq!(format_number(999.0), "999");
        assert_eq!(format_number(1000.0), "1,000");
        assert_eq!(format_number(-1000000.0), "-1,000,000");
        assert_eq!(format_number(0.125), "0.13");
        assert_eq!(format_number(-0.001), "0");
        assert_eq!(format_number(1999.999), "2,000");
        assert_eq!(format_number(12.10), "12.1");
    }

    #[test]
    fn progress_line_reports_bytes_and_caps_percent() {
        assert_eq!(
            progress_line("crypto.db", 512 * 1024 * 1024, 1024 * 1024 * 1024),
            "backing up crypto.db: 512.0 MiB of 1.0 GiB (50%)"
        );
        assert_eq!(
            progress_line("x.db", 2048, 1024),
            "backing up x.db: 2.0 KiB of 1.0 KiB (99%)"
        );
        assert_eq!(progress_line("x.db", 10, 0), "backing up x.db: 10 B");
    }

    #[test]
    fn progress_reporter_stops_promptly_and_backup_succeeds_with_progress_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("p.db");
        drop(create_db(&db, "WAL", 100));
        let started = Instant::now();
        let out = backup_database(&db, dir.path(), "p.db.backup_1", true).unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(count_rows(&out.path), 100);
    }
}
