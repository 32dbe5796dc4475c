//! `claimguard migrate pvc/NAME --apply`: the migration carried out through
//! the API server, one step at a time.
//!
//! The driver is a loop: look at the claim and its volume, let
//! [`plan::stage`] say where the migration stands, do the one thing that
//! stage calls for (a write, or a wait), look again. The next look is the
//! check of the step just done: the stage must have moved forward, or the
//! run stops. A run started after an interruption at any point goes through
//! the same loop and picks up where the last one stopped; a run after the
//! end finds nothing to do.

use super::live::Kube;
use super::plan::{self, Stage, ANNOTATION, STEPS};
use super::{assess, Assessed, Assessment, MigrateError, Refusal};
use crate::one_shot::{code, reason};
use serde_json::Value;
use std::io::Write;
use std::time::{Duration, Instant};

/// How `--apply` waits.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// How long each wait may take (the old claim gone, the volume released,
    /// the new claim bound).
    pub timeout: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            timeout: Duration::from_secs(300),
        }
    }
}

/// How a run ended, short of an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The claim is ReadWriteOncePod, bound to its volume; `already`: it was
    /// when the run started.
    Done { already: bool },
    /// Refused, nothing written by this run (exit 1).
    Refused(Refusal),
}

const FIRST_POLL: Duration = Duration::from_millis(100);
const MAX_POLL: Duration = Duration::from_secs(2);

struct Run<'a> {
    kube: &'a Kube,
    ns: &'a str,
    name: &'a str,
    resume: String,
}

impl Run<'_> {
    fn claim(&self) -> String {
        format!("PersistentVolumeClaim {}/{}", self.ns, self.name)
    }

    /// What an error may say about the volume at `stage`.
    fn safety(&self, stage: Stage, pv: &str) -> String {
        if stage <= Stage::Start {
            format!("nothing was deleted; the claim and PersistentVolume {pv} are as they were")
        } else {
            format!("PersistentVolume {pv} is kept whatever happens to the claim (reclaim policy Retain)")
        }
    }

    /// The error of a write at `stage` (`doing`, on `what`).
    fn write_error(
        &self,
        stage: Stage,
        pv: &str,
        doing: String,
        what: String,
        get: String,
        e: kube::Error,
    ) -> MigrateError {
        let step = write_step(stage);
        match code(&e) {
            Some(409) => MigrateError::Conflict {
                step,
                what,
                get,
                reason: format!("409 Conflict: {}", reason(&e)),
                safety: self.safety(stage, pv),
                resume: self.resume.clone(),
            },
            Some(c) => MigrateError::StepFailed {
                step,
                doing,
                reason: format!("the API server answered {c}: {}", reason(&e)),
                safety: self.safety(stage, pv),
                resume: self.resume.clone(),
            },
            None => MigrateError::StepFailed {
                step,
                doing,
                reason: format!(
                    "cannot reach the API server at {}: {}",
                    self.kube.url,
                    reason(&e)
                ),
                safety: self.safety(stage, pv),
                resume: self.resume.clone(),
            },
        }
    }
}

/// The step a write at `stage` carries out.
fn write_step(stage: Stage) -> u8 {
    match stage {
        Stage::Start => 2,
        s => s.step(),
    }
}

/// What step `step` did, once it is done.
fn done_line(step: u8, a: &Assessed, claim: &str) -> String {
    let pv = &a.volume.name;
    let old_policy = a
        .record
        .as_ref()
        .map(|r| r.reclaim_policy.as_str())
        .unwrap_or("Delete");
    let text = match step {
        2 => format!(
            "PersistentVolume {pv}: reclaim policy Retain (was {old_policy}); the claim is recorded in annotation {ANNOTATION}"
        ),
        3 => format!("{claim} deleted; PersistentVolume {pv} Released and kept"),
        4 => format!(
            "PersistentVolume {pv}: accessModes [ReadWriteOncePod]; claimRef keeps {} without the old uid",
            claim.trim_start_matches("PersistentVolumeClaim ")
        ),
        5 => format!(
            "{claim} created again, ReadWriteOncePod, and Bound to {pv} (uid {})",
            a.claim
                .as_ref()
                .and_then(|c| c.uid.as_deref())
                .unwrap_or("-")
        ),
        6 => format!("PersistentVolume {pv}: reclaim policy {old_policy} again; annotation removed"),
        _ => String::new(),
    };
    format!("step {step}/{STEPS}  {text}")
}

pub(super) async fn run(
    kube: &Kube,
    ns: &str,
    name: &str,
    opts: &ApplyOptions,
    out: &mut (dyn Write + Send),
) -> Result<Applied, MigrateError> {
    let r = Run {
        kube,
        ns,
        name,
        resume: format!("claimguard migrate pvc/{name} -n {ns} --apply"),
    };
    let claim = r.claim();
    let mut say = |line: String| {
        // stdout may be closed (a pipe to `head`); the migration goes on.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    let mut known_pv: Option<String> = None;
    let mut last: Option<Assessed> = None;
    // The stage the last write must have reached, and which step it was.
    let mut expect: Option<(Stage, u8)> = None;
    let mut waiting: Option<(Stage, Instant)> = None;
    let mut poll = FIRST_POLL;
    // Times the claim was recorded again because it changed (bounded: a
    // claim that keeps changing is someone else's work in progress).
    let mut rerecorded = 0;
    loop {
        let obs = kube.observe(name, known_pv.as_deref()).await;
        let obs = obs.map_err(|e| interrupted(&r, last.as_ref(), e))?;
        let a = match assess(ns, name, &obs).map_err(|e| interrupted(&r, last.as_ref(), e))? {
            Assessment::Unbound(c, reason) => {
                return Ok(Applied::Refused(Refusal::of(&reason, &c)));
            }
            Assessment::Staged(a) => *a,
        };
        known_pv = Some(a.volume.name.clone());
        let pv = a.volume.name.clone();
        if let Some((want, step)) = expect.take() {
            if a.stage < want {
                return Err(MigrateError::Inconsistent(format!(
                    "step {step}/{STEPS} did not take effect: after it the migration of {claim} stands at '{}', expected '{}' or later; someone else may be changing PersistentVolume {pv} or the claim: look at them, then run `{}` again",
                    a.stage.as_str(),
                    want.as_str(),
                    r.resume
                )));
            }
        }
        match &last {
            None if a.stage == Stage::Done => {
                say(format!(
                    "{claim} is already ReadWriteOncePod, bound to PersistentVolume {pv}: nothing to do"
                ));
                return Ok(Applied::Done { already: true });
            }
            None if a.stage > Stage::Start => say(format!(
                "resuming: a migration of {claim} is under way (annotation {ANNOTATION} on PersistentVolume {pv}); at step {}/{STEPS}",
                a.stage.step()
            )),
            // Start: said once the checks of step 1 pass.
            None => {}
            Some(prev) => {
                if a.stage < prev.stage {
                    return Err(MigrateError::Inconsistent(format!(
                        "the migration of {claim} went back from '{}' to '{}': someone else is changing PersistentVolume {pv} or the claim; look at them, then run `{}` again",
                        prev.stage.as_str(),
                        a.stage.as_str(),
                        r.resume
                    )));
                }
                for step in prev.stage.step().max(2)..a.stage.step().min(STEPS + 1) {
                    say(done_line(step, &a, &claim));
                }
            }
        }
        if a.stage == Stage::Done {
            say(format!(
                "done: {claim} is ReadWriteOncePod and bound to the same volume, {pv}; scale its workload back up, and write accessModes: [ReadWriteOncePod] in its manifest"
            ));
            return Ok(Applied::Done { already: false });
        }
        // A stage that waits: poll until it moves, within the timeout.
        if matches!(
            a.stage,
            Stage::WaitGone | Stage::WaitReleased | Stage::WaitBound
        ) {
            let since = match waiting {
                Some((s, t)) if s == a.stage => t,
                _ => {
                    poll = FIRST_POLL;
                    Instant::now()
                }
            };
            waiting = Some((a.stage, since));
            if since.elapsed() >= opts.timeout {
                return Err(timeout(&r, &a, opts.timeout));
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(MAX_POLL);
            last = Some(a);
            continue;
        }
        waiting = None;
        let record = a.record.clone().ok_or_else(|| {
            MigrateError::Inconsistent(format!("{claim}: nothing to make the new claim from"))
        })?;
        let pv_raw = obs.pv.clone().unwrap_or(Value::Null);
        let pv_get = format!("pv {pv} -o yaml");
        match a.stage {
            Stage::Start => {
                let claim_v = a.claim.as_ref().expect("a claim not yet migrated exists");
                let n = kube.neighbours().await?;
                let users = plan::users_of(ns, name, &n.pods, &n.workloads);
                let runners = plan::runners(ns, name, n.workloads.iter().map(|(k, w)| (*k, w)));
                if let plan::Verdict::NotCandidate(reason) =
                    plan::judge(claim_v, Some(&a.volume), &users, &runners)
                {
                    return Ok(Applied::Refused(Refusal::of(&reason, claim_v)));
                }
                if !users.is_empty() {
                    return Ok(Applied::Refused(in_use(&claim, &users, false)));
                }
                say(format!(
                    "migrating {claim} (PersistentVolume {pv}) from ReadWriteOnce to ReadWriteOncePod"
                ));
                for note in &n.notes {
                    say(format!("note: {note}"));
                }
                say(format!("step 1/{STEPS}  no pod uses {claim}"));
                let body = plan::retain_and_record(&pv_raw, &record);
                let got = kube.replace_pv(&body).await.map_err(|e| {
                    r.write_error(
                        a.stage,
                        &pv,
                        format!("set reclaim policy Retain on PersistentVolume {pv}"),
                        format!("PersistentVolume {pv}"),
                        pv_get.clone(),
                        e,
                    )
                })?;
                if got
                    .pointer("/spec/persistentVolumeReclaimPolicy")
                    .and_then(Value::as_str)
                    != Some("Retain")
                {
                    return Err(MigrateError::Inconsistent(format!(
                        "step 2/{STEPS}: the API server stored PersistentVolume {pv} without reclaim policy Retain; not deleting {claim}"
                    )));
                }
                expect = Some((Stage::DeleteClaim, 2));
            }
            Stage::DeleteClaim => {
                let c = a.claim.as_ref().expect("the old claim exists");
                // Nobody may have started using it since: a pod that holds it
                // keeps it terminating (kubernetes.io/pvc-protection).
                let pods = kube
                    .pods()
                    .await
                    .map_err(|e| interrupted(&r, Some(&a), e))?;
                let users = plan::users_of(ns, name, &pods, &[]);
                if !users.is_empty() {
                    return Ok(Applied::Refused(in_use(&claim, &users, true)));
                }
                // The claim changed since step 2 recorded it (a label, an
                // annotation, a bigger request): record it as it is now, so
                // the new claim is made from what is deleted.
                let pvc_raw = obs.pvc.as_ref().expect("the old claim exists");
                let mut fresh = plan::Record::of(pvc_raw, &a.volume).map_err(|reason| {
                    MigrateError::Unreadable {
                        what: claim.clone(),
                        reason,
                    }
                })?;
                fresh.reclaim_policy = record.reclaim_policy.clone();
                fresh.volume_access_modes = record.volume_access_modes.clone();
                if fresh != record {
                    rerecorded += 1;
                    if rerecorded > 3 {
                        return Err(MigrateError::Inconsistent(format!(
                            "step 3/{STEPS}: {claim} keeps changing (recorded again 3 times): something is still writing to it; PersistentVolume {pv} is kept (reclaim policy Retain): run `{}` again once it is quiet",
                            r.resume
                        )));
                    }
                    let body = plan::retain_and_record(&pv_raw, &fresh);
                    kube.replace_pv(&body).await.map_err(|e| {
                        r.write_error(
                            a.stage,
                            &pv,
                            format!("record {claim} again on PersistentVolume {pv}"),
                            format!("PersistentVolume {pv}"),
                            pv_get.clone(),
                            e,
                        )
                    })?;
                    say(format!(
                        "note: {claim} changed since the migration recorded it; recorded again"
                    ));
                    expect = Some((Stage::DeleteClaim, 3));
                    last = Some(a);
                    continue;
                }
                let uid = c.uid.clone().unwrap_or_default();
                let rv = obs
                    .pvc
                    .as_ref()
                    .and_then(|p| p.pointer("/metadata/resourceVersion"))
                    .and_then(Value::as_str);
                kube.delete_pvc(name, &uid, rv).await.map_err(|e| {
                    r.write_error(
                        a.stage,
                        &pv,
                        format!("delete {claim}"),
                        claim.clone(),
                        format!("pvc {name} -n {ns} -o yaml"),
                        e,
                    )
                })?;
                expect = Some((Stage::WaitGone, 3));
            }
            Stage::Rebind => {
                let body = plan::rebind(&pv_raw, &record);
                kube.replace_pv(&body).await.map_err(|e| {
                    r.write_error(
                        a.stage,
                        &pv,
                        format!("make PersistentVolume {pv} ReadWriteOncePod"),
                        format!("PersistentVolume {pv}"),
                        pv_get.clone(),
                        e,
                    )
                })?;
                expect = Some((Stage::Create, 4));
            }
            Stage::Create => {
                let body = plan::new_claim(&record, &a.volume);
                kube.create_pvc(&body).await.map_err(|e| {
                    r.write_error(
                        a.stage,
                        &pv,
                        format!("create {claim} again"),
                        claim.clone(),
                        format!("pvc {name} -n {ns} -o yaml"),
                        e,
                    )
                })?;
                expect = Some((Stage::WaitBound, 5));
            }
            Stage::Restore => {
                let body = plan::restore(&pv_raw, &record);
                kube.replace_pv(&body).await.map_err(|e| {
                    r.write_error(
                        a.stage,
                        &pv,
                        format!(
                            "give PersistentVolume {pv} its reclaim policy {} back",
                            record.reclaim_policy
                        ),
                        format!("PersistentVolume {pv}"),
                        pv_get.clone(),
                        e,
                    )
                })?;
                expect = Some((Stage::Done, 6));
            }
            Stage::WaitGone | Stage::WaitReleased | Stage::WaitBound | Stage::Done => {
                unreachable!("handled above")
            }
        }
        last = Some(a);
    }
}

/// The refusal while pods use the claim, with what stops them.
fn in_use(claim: &str, users: &[plan::User], under_way: bool) -> Refusal {
    let mut stop: Vec<String> = users.iter().map(plan::User::stop_command).collect();
    stop.dedup();
    let kept = if under_way {
        " (the volume stays Retain, the migration recorded: run again once they are gone)"
    } else {
        ""
    };
    Refusal {
        reason: "in-use".into(),
        message: format!(
            "{claim} is used by {}; stop it first{kept}: {}",
            users
                .iter()
                .map(plan::User::describe)
                .collect::<Vec<_>>()
                .join(", "),
            stop.join("; ")
        ),
    }
}

/// A read failed: once a migration is under way, say that the volume is
/// safe and how to resume.
fn interrupted(r: &Run<'_>, last: Option<&Assessed>, e: MigrateError) -> MigrateError {
    match last {
        Some(a) if a.stage > Stage::Start => MigrateError::Interrupted {
            error: Box::new(e),
            safety: r.safety(a.stage, &a.volume.name),
            resume: r.resume.clone(),
        },
        _ => e,
    }
}

fn timeout(r: &Run<'_>, a: &Assessed, waited: Duration) -> MigrateError {
    let pv = &a.volume.name;
    let (what, hint) = match a.stage {
        Stage::WaitGone => (
            format!("{} is still terminating", r.claim()),
            format!(
                "a pod may still use it (finalizer kubernetes.io/pvc-protection): kubectl describe pvc {} -n {}",
                r.name, r.ns
            ),
        ),
        Stage::WaitReleased => (
            format!("PersistentVolume {pv} is not Released yet"),
            format!(
                "the PV controller (kube-controller-manager) releases it once the claim is gone: kubectl describe pv {pv}"
            ),
        ),
        _ => (
            format!("{} is not Bound to {pv} yet", r.claim()),
            format!(
                "kubectl describe pvc {} -n {} says why (its events)",
                r.name, r.ns
            ),
        ),
    };
    MigrateError::Timeout {
        step: a.stage.step(),
        what,
        waited: format!("{}s", waited.as_secs()),
        safety: r.safety(a.stage, pv),
        hint,
        resume: r.resume.clone(),
    }
}
