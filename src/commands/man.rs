//! `orchestrator man`: the manual page, or with `--out-dir` one page per command.

use anyhow::{Context as _, Result};
use clap::{Args, CommandFactory};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::Context;
use crate::cli::Cli;
use crate::error::code;
use crate::store::file::write_atomic;

/// Print the manual page, or write one page per command
///
/// The page is roff: read it with `orchestrator man | man -l -`, or install the pages with
/// `orchestrator man --out-dir ~/.local/share/man/man1`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write orchestrator.1 and a page per subcommand (orchestrator-task-add.1, ...) into this
    /// directory, made if missing, instead of printing the main page
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: ManArgs) -> Result<u8> {
    let mut command = Cli::command();
    command.build();
    let Some(dir) = args.out_dir else {
        let page = page(&command)?;
        if ctx.json {
            ctx.emit(json!({"page": String::from_utf8_lossy(&page)}), "");
        } else {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&page)
                .and_then(|()| stdout.flush())
                .context("cannot write the manual page to stdout")?;
        }
        return Ok(code::OK);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    write_pages(&command, &dir, &mut written)?;
    let text: String = written
        .iter()
        .map(|path| format!("{}\n", path.display()))
        .collect();
    ctx.emit_shaped(
        json!({"dir": dir, "pages": written}),
        &format!("Wrote {} manual pages:\n{text}", written.len()),
        super::output::Shape {
            quiet: super::output::Quiet::Text(text.clone()),
            ..Default::default()
        },
    );
    Ok(code::OK)
}

/// One page for `command`, then one for each subcommand, depth first; clap's own `help`
/// subcommand and hidden ones get none.
fn write_pages(command: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    let man = clap_mangen::Man::new(command.clone());
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)
        .with_context(|| format!("cannot render {}", path.display()))?;
    write_atomic(&path, &page)?;
    written.push(path);
    for sub in command.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, dir, written)?;
    }
    Ok(())
}

fn page(command: &clap::Command) -> Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .context("cannot render the manual page")?;
    Ok(page)
}
