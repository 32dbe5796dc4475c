//! `explain` output: text that reads like `kubectl describe` (aligned
//! sections, no colour), or one JSON object for scripts.

use super::model::{caution, Explanation};
use std::fmt::Write as _;

/// Pretty JSON with a trailing newline.
pub fn render_json(e: &Explanation) -> String {
    let mut s = serde_json::to_string_pretty(e).unwrap_or_default();
    s.push('\n');
    s
}

/// Rows as columns separated by three spaces, each cell padded to its column.
fn table(out: &mut String, indent: &str, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let mut l = String::from(indent);
        for (i, c) in cells.iter().enumerate() {
            l.push_str(c);
            if i + 1 < cells.len() {
                l.extend(std::iter::repeat_n(' ', widths[i] - c.chars().count() + 3));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn or_none(v: Option<&str>) -> &str {
    v.unwrap_or("<none>")
}

pub fn render_text(e: &Explanation) -> String {
    let mut out = String::new();
    let field = |out: &mut String, k: &str, v: &str| {
        let _ = writeln!(out, "{:<12}{v}", format!("{k}:"));
    };
    let target = format!("{}/{}", e.target.namespace, e.target.name);
    let label = match e.target.kind {
        "Pod" => "Pod",
        _ => "Claim",
    };
    field(&mut out, label, &target);
    if let Some(p) = &e.pod {
        field(&mut out, "Phase", or_none(p.phase.as_deref()));
        field(&mut out, "Node", or_none(p.node.as_deref()));
        if let Some(w) = &p.waiting {
            let why = match &p.waiting_message {
                Some(m) => format!("{w}: {m}"),
                None => w.clone(),
            };
            field(&mut out, "Waiting", &why);
        }
    }
    out.push_str("Claims:\n");
    if e.claims.is_empty() {
        out.push_str("  <none>\n");
    }
    for c in &e.claims {
        let _ = writeln!(out, "  {}:", c.name);
        let sub = |out: &mut String, k: &str, v: &str| {
            let _ = writeln!(out, "    {:<14}{v}", format!("{k}:"));
        };
        match &c.access_modes {
            Some(m) => sub(&mut out, "Access Modes", &m.join(",")),
            None => sub(&mut out, "Access Modes", "<the claim does not exist>"),
        }
        sub(&mut out, "Volume", or_none(c.volume.as_deref()));
        if c.attachments.is_empty() {
            sub(&mut out, "Attachments", "<none>");
        } else {
            out.push_str("    Attachments:\n");
            let rows: Vec<Vec<String>> = c
                .attachments
                .iter()
                .map(|a| {
                    vec![
                        a.node.clone(),
                        if a.deleting {
                            format!("{} (detaching)", a.attached)
                        } else {
                            a.attached.to_string()
                        },
                        a.node_state.clone(),
                        a.detach_error.clone().unwrap_or_else(|| "<none>".into()),
                    ]
                })
                .collect();
            table(
                &mut out,
                "      ",
                &["NODE", "ATTACHED", "NODE STATE", "DETACH ERROR"],
                &rows,
            );
        }
        let users = if e.pod.is_some() {
            "Other Users"
        } else {
            "Users"
        };
        if c.users.is_empty() {
            sub(&mut out, users, "<none>");
        } else {
            let _ = writeln!(out, "    {users}:");
            let rows: Vec<Vec<String>> = c
                .users
                .iter()
                .map(|u| {
                    vec![
                        format!("{}/{}", u.namespace, u.name),
                        or_none(u.node.as_deref()).to_string(),
                        or_none(u.phase.as_deref()).to_string(),
                        u.terminating.to_string(),
                        u.read_only.to_string(),
                    ]
                })
                .collect();
            table(
                &mut out,
                "      ",
                &["POD", "NODE", "PHASE", "TERMINATING", "READ-ONLY"],
                &rows,
            );
        }
    }
    out.push_str("Findings:\n");
    if e.findings.is_empty() {
        out.push_str("  <none>: no rule of claimguard explains a wait here\n");
    }
    for f in &e.findings {
        let _ = writeln!(out, "  {}", f.message);
    }
    out.push_str("Events:\n");
    if e.events.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let rows: Vec<Vec<String>> = e
            .events
            .iter()
            .map(|ev| {
                vec![
                    ev.type_.clone(),
                    ev.reason.clone(),
                    if ev.count > 1 {
                        format!("(x{}) {}", ev.count, ev.message)
                    } else {
                        ev.message.clone()
                    },
                ]
            })
            .collect();
        table(&mut out, "  ", &["TYPE", "REASON", "MESSAGE"], &rows);
    }
    for n in &e.notes {
        let _ = writeln!(out, "Note:       {n}");
    }
    if let Some(next) = &e.next {
        match caution(e) {
            // A shell comment: the line can still be pasted as it is.
            Some(c) => field(&mut out, "Next", &format!("{next}   # {c}")),
            None => field(&mut out, "Next", next),
        }
    }
    out
}
