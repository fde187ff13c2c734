//! `orchestrator next`: the task `start` would pick, and why the others are not ready.

use anyhow::Result;
use serde_json::json;
use std::fmt::Write as _;

use super::Context;
use super::output::Shape;
use crate::core::select::select_next;
use crate::core::text::one_line;
use crate::error::code;

pub fn run(ctx: &Context) -> Result<u8> {
    let ws = ctx.workspace()?;
    let stack = ws.load_view()?;
    let selection = select_next(&stack, ctx.now);
    // One object per task of the stack: built only when it is printed.
    let others: Vec<_> = selection
        .others
        .iter()
        .filter(|_| ctx.json)
        .map(|(task, reason)| {
            json!({"task": task.id, "status": task.status, "priority": task.priority,
                   "reason": reason.code(), "detail": reason.to_string()})
        })
        .collect();
    let mut text = match selection.chosen {
        Some(task) => format!(
            "next={} priority={} progress={} status={}\n{}\n",
            task.id,
            task.priority,
            task.progress,
            task.status,
            one_line(task.display_title())
        ),
        None => "next=none\nNo task is ready.\n".to_string(),
    };
    if !selection.others.is_empty() {
        text.push_str("\nNot picked:\n");
        // Written in place: a line per task of the stack, without a string of its own.
        for (task, reason) in &selection.others {
            writeln!(text, "  {:<24} {reason}", task.id).expect("a String takes any text");
        }
    }
    let json = json!({
        "task": selection.chosen.map(|t| &t.id),
        "title": selection.chosen.map(|t| &t.title),
        "progress": selection.chosen.map(|t| t.progress),
        "others": others,
    });
    let shape = Shape {
        headings: &["Not picked:"],
        ..Shape::default()
    };
    ctx.emit_shaped(json, &text, shape);
    Ok(if selection.chosen.is_some() {
        code::OK
    } else {
        code::NOTHING_TO_DO
    })
}
