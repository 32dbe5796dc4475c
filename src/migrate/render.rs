//! What `migrate` prints: the candidates (`--list`) and the plan, as text
//! for a person and as JSON for scripts (field names fixed).

use super::plan::{Stage, User, Verdict, Volume, ANNOTATION, STEPS};
use super::{Listing, Plan};
use serde_json::{json, Value};

/// Columns padded to their widest cell, two spaces apart; the last one free.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 < r.len() {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            } else {
                line.push_str(c);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn users_short(users: &[User]) -> String {
    if users.is_empty() {
        return "<none>".into();
    }
    users
        .iter()
        .map(|u| match &u.node {
            Some(n) => format!("{}/{} ({n})", u.namespace, u.name),
            None => format!("{}/{}", u.namespace, u.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn scope(l: &Listing) -> String {
    match &l.namespace {
        Some(ns) => format!("in namespace {ns}"),
        None => "in all namespaces".into(),
    }
}

/// `--list` as text: the candidates with why each qualifies; with
/// `verbose`, the other claims with why they are not.
pub fn render_list_text(l: &Listing, verbose: bool) -> String {
    let (cands, others): (Vec<_>, Vec<_>) = l
        .entries
        .iter()
        .partition(|e| matches!(e.verdict, Verdict::Candidate(_)));
    let mut out = String::new();
    if cands.is_empty() {
        out.push_str(&format!(
            "No claim can move to ReadWriteOncePod {}.\n",
            scope(l)
        ));
    } else {
        out.push_str(&format!(
            "Claims that can move from ReadWriteOnce to ReadWriteOncePod {}:\n",
            scope(l)
        ));
        let mut rows = vec![vec![
            "NAMESPACE".to_string(),
            "CLAIM".into(),
            "VOLUME".into(),
            "CAPACITY".into(),
            "USED BY".into(),
            "WHY".into(),
        ]];
        for e in &cands {
            let Verdict::Candidate(why) = &e.verdict else {
                continue;
            };
            rows.push(vec![
                e.claim.namespace.clone(),
                e.claim.name.clone(),
                e.volume
                    .as_ref()
                    .map(|v| v.name.clone())
                    .unwrap_or_default(),
                e.volume
                    .as_ref()
                    .and_then(|v| v.capacity.clone())
                    .unwrap_or_else(|| "-".into()),
                users_short(&e.users),
                why.clone(),
            ]);
        }
        out.push_str(&table(&rows));
        let first = cands[0];
        out.push_str(&format!(
            "Next: claimguard migrate pvc/{} -n {} prints the plan; --apply carries it out.\n",
            first.claim.name, first.claim.namespace
        ));
    }
    if others.is_empty() {
        return out;
    }
    if !verbose {
        out.push_str(&format!(
            "{} other claim{} cannot (-v says why).\n",
            others.len(),
            if others.len() == 1 { "" } else { "s" }
        ));
        return out;
    }
    out.push_str("\nNot candidates:\n");
    let mut rows = vec![vec![
        "NAMESPACE".to_string(),
        "CLAIM".into(),
        "REASON".into(),
        "WHY".into(),
    ]];
    for e in &others {
        let Verdict::NotCandidate(r) = &e.verdict else {
            continue;
        };
        rows.push(vec![
            e.claim.namespace.clone(),
            e.claim.name.clone(),
            r.id().into(),
            r.message(&e.claim),
        ]);
    }
    out.push_str(&table(&rows));
    out
}

fn volume_json(v: &Volume) -> Value {
    json!({
        "name": v.name,
        "driver": v.csi_driver,
        "accessModes": v.modes.to_string().split(',').filter(|m| *m != "-").collect::<Vec<_>>(),
        "capacity": v.capacity,
        "storageClass": v.storage_class,
        "reclaimPolicy": v.reclaim_policy,
    })
}

fn users_json(users: &[User]) -> Value {
    Value::Array(
        users
            .iter()
            .map(|u| {
                json!({"namespace": u.namespace, "name": u.name, "node": u.node,
                       "terminating": u.terminating,
                       "owner": u.owner.as_ref().map(|o| json!({"kind": o.kind, "name": o.name}))})
            })
            .collect(),
    )
}

/// `--list -o json`: every claim looked at, candidates and not.
pub fn render_list_json(l: &Listing) -> String {
    let mut candidates = Vec::new();
    let mut others = Vec::new();
    for e in &l.entries {
        let base = json!({
            "namespace": e.claim.namespace,
            "name": e.claim.name,
            "volume": e.volume.as_ref().map(volume_json),
            "users": users_json(&e.users),
        });
        let mut o = base;
        match &e.verdict {
            Verdict::Candidate(why) => {
                o["why"] = json!(why);
                candidates.push(o);
            }
            Verdict::NotCandidate(r) => {
                o["reason"] = json!(r.id());
                o["message"] = json!(r.message(&e.claim));
                others.push(o);
            }
        }
    }
    let v = json!({
        "apiVersion": "claimguard.io/v1",
        "kind": "MigrationCandidates",
        "namespace": l.namespace,
        "candidates": candidates,
        "notCandidates": others,
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

fn stage_line(p: &Plan) -> String {
    match p.stage {
        Some(Stage::Start) => "not started".into(),
        Some(Stage::Done) => "done: the claim and its volume are ReadWriteOncePod".into(),
        Some(s) => format!(
            "under way (annotation {ANNOTATION} on the volume): step {}/{STEPS} next",
            s.step()
        ),
        None => "-".into(),
    }
}

/// The plan as text: the claim, its volume, who uses it, then each step
/// left as commands a person can paste. A refused plan prints nothing here
/// (its one line goes to stderr).
pub fn render_plan_text(p: &Plan) -> String {
    if p.refused.is_some() {
        return String::new();
    }
    let mut out = String::new();
    let line = |k: &str, v: String| format!("{k:<10}  {v}\n");
    out.push_str(&line(
        "Claim:",
        format!(
            "{}/{} (ReadWriteOnce -> ReadWriteOncePod)",
            p.namespace, p.name
        ),
    ));
    if let Some(v) = &p.volume {
        let mut facts = Vec::new();
        if let Some(d) = &v.csi_driver {
            facts.push(format!("CSI {d}"));
        }
        facts.push(format!("access modes {}", v.modes));
        if let Some(c) = &v.capacity {
            facts.push(c.clone());
        }
        if let Some(sc) = &v.storage_class {
            facts.push(format!("storage class {sc}"));
        }
        facts.push(format!(
            "reclaim policy {}",
            v.reclaim_policy.as_deref().unwrap_or("-")
        ));
        out.push_str(&line(
            "Volume:",
            format!("{} ({})", v.name, facts.join(", ")),
        ));
    }
    out.push_str(&line(
        "Used by:",
        if p.users.is_empty() {
            "<none>".into()
        } else {
            p.users
                .iter()
                .map(User::describe)
                .collect::<Vec<_>>()
                .join(", ")
        },
    ));
    out.push_str(&line("Migration:", stage_line(p)));
    for n in &p.notes {
        out.push_str(&line("Note:", n.clone()));
    }
    if p.stage == Some(Stage::Done) {
        out.push_str("\nNothing to do.\n");
        return out;
    }
    out.push_str(&format!(
        "\nNothing was written. `claimguard migrate pvc/{} -n {} --apply` carries out these\nsteps through the API, checks each one and resumes where it stopped; or paste\nthem one step at a time, checking each before the next.\n",
        p.name, p.namespace
    ));
    for s in &p.steps {
        out.push_str(&format!("\n# {}/{STEPS}  {}\n", s.step, s.title));
        for c in &s.commands {
            out.push_str(c);
            out.push('\n');
        }
    }
    out.push_str("\nAfterwards: scale the workload back up, and write accessModes: [ReadWriteOncePod]\nin the claim's manifest (a claim's access modes cannot change: applying the old\nmanifest would fail).\n");
    out
}

/// The plan as JSON.
pub fn render_plan_json(p: &Plan) -> String {
    let v = json!({
        "apiVersion": "claimguard.io/v1",
        "kind": "MigrationPlan",
        "claim": {"namespace": p.namespace, "name": p.name},
        "volume": p.volume.as_ref().map(volume_json),
        "stage": p.stage.map(|s| s.as_str()),
        "usedBy": users_json(&p.users),
        "refused": p.refused.as_ref().map(|r| json!({"reason": r.reason, "message": r.message})),
        "steps": p.steps,
        "notes": p.notes,
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}
