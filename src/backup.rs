// TEMPORARY placeholder until the real module lands.
use std::path::{Path, PathBuf};
pub fn backup_file_name(db_path: &Path, at: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "{}.backup_{}",
        db_path.file_name().unwrap().to_string_lossy(),
        at.format("%Y%m%d_%H%M%S")
    )
}
pub struct BackupOutcome {
    pub path: PathBuf,
    pub bytes: u64,
}
pub fn backup_database(_db: &Path, _d: &Path, _n: &str, _s: bool) -> anyhow::Result<BackupOutcome> {
    anyhow::bail!("todo")
}
pub fn verify_backup(_p: &Path) -> anyhow::Result<()> {
    Ok(())
}
pub fn prune_backups(_d: &Path, _db: &Path, _k: usize) -> anyhow::Result<Vec<PathBuf>> {
    Ok(vec![])
}
pub struct MetricSpec {
    pub name: String,
    pub query: String,
    pub goal: Option<f64>,
}
pub struct MetricReading {
    pub name: String,
    pub value: Option<f64>,
    pub error: Option<String>,
}
pub fn read_metrics(_db: &Path, _m: &[MetricSpec]) -> Vec<MetricReading> {
    vec![]
}
pub fn describe_metric(_v: f64, _g: Option<f64>, _b: Option<f64>) -> String {
    String::new()
}
