//! `orchestrator task show`: one task with its context, open items, claim and recent checkpoints.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::{find, task_json};
use crate::commands::Context;
use crate::commands::output::{Quiet, Shape};
use crate::core::text::{one_line, strip_controls};

/// Show one task with its recent checkpoints
#[derive(Debug, Args)]
pub struct TaskShowArgs {
    /// The task to show
    #[arg(value_name = "ID")]
    pub id: String,
}

pub fn run(ctx: &Context, args: TaskShowArgs) -> Result<u8> {
    let ws = ctx.workspace()?;
    let mut stack = ws.load_stack()?;
    let task = find(&ws, &mut stack, &args.id)?.clone();
    let mut text = format!(
        "{}  {}\nstatus:   {}\npriority: {}\nprogress: {} ({:.0}%)\n",
        task.id,
        one_line(&task.title),
        task.status,
        task.priority,
        task.progress,
        task.progress.percent()
    );
    if let Some(reason) = task.blocked_reason() {
        text.push_str(&format!("blocked:  {}\n", one_line(reason)));
    }
    if !task.depends_on.is_empty() {
        text.push_str(&format!("after:    {}\n", task.depends_on.join(", ")));
    }
    for (label, field) in [
        ("description:", &task.description),
        ("acceptance:", &task.acceptance),
        ("notes:", &task.notes),
    ] {
        if let Some(field) = field {
            // Multi-line text stays multi-line, indented under its label.
            text.push_str(label);
            text.push('\n');
            for line in strip_controls(field).lines() {
                text.push_str(&format!("  {}\n", line.trim_end()));
            }
        }
    }
    if let Some(claim) = &task.claim {
        text.push_str(&format!(
            "claim:    {} (agent {}, pid {} on {}, lease until {})\n",
            claim.session,
            claim.agent,
            claim.pid,
            claim.host,
            crate::clock::format(claim.lease_expires)
        ));
    }
    for (heading, items) in [
        ("open issues:", &task.issues),
        ("next steps:", &task.next_steps),
    ] {
        if !items.is_empty() {
            text.push_str(heading);
            text.push('\n');
            // Newest first, all of them: this is where the brief sends for what it left out.
            for item in items.iter().rev() {
                text.push_str(&format!("  #{}  {}\n", item.n, one_line(&item.text)));
            }
        }
    }
    if !task.checkpoints.is_empty() {
        text.push_str("recent checkpoints:\n");
        for cp in task.checkpoints.iter().rev().take(10) {
            text.push_str(&format!(
                "  {}  {:>5}  {}\n",
                cp.at.format("%Y-%m-%d %H:%M:%S"),
                cp.progress,
                one_line(&cp.message)
            ));
        }
    }
    let mut json = task_json(&task);
    json["checkpoints"] = json!(task.checkpoints);
    json["description"] = json!(task.description);
    json["acceptance"] = json!(task.acceptance);
    json["notes"] = json!(task.notes);
    json["issues"] = json!(task.issues);
    json["next_steps"] = json!(task.next_steps);
    // All of it is the task's data: --quiet keeps it.
    let shape = Shape {
        quiet: Quiet::Text(text.clone()),
        headings: &["open issues:", "next steps:", "recent checkpoints:"],
        labels: &[
            "status:",
            "priority:",
            "progress:",
            "after:",
            "claim:",
            "description:",
            "acceptance:",
            "notes:",
        ],
    };
    ctx.emit_shaped(json!({"task": json}), &text, shape);
    Ok(0)
}
