//! A webhook's `matchConditions` evaluated as the API server evaluates them
//! (k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions): each condition is a
//! CEL expression over `object`, `oldObject` and `request`; the first one that is
//! `false` skips the webhook, whatever the others say; otherwise any error (a missing
//! field read without `has()`, a non-boolean result) is handed to the failure policy:
//! `Fail` refuses the request without calling the webhook, `Ignore` skips it.
//!
//! CEL comes from the maintained `cel` crate (cel-rust), not a hand-written evaluator.
//! Not modelled: the `authorizer` variable, the API server's cost limits, and the
//! type-check against the OpenAPI schema at configuration time (only parse errors are
//! refused up front; a misspelt field surfaces as a runtime error, as it does for the
//! API server's dynamically-typed webhook conditions).
//!
//! Kept free of the stand-in's HTTP machinery so `tests/manifests.rs` and
//! `tests/helm_chart.rs` can evaluate the shipped conditions too.

use std::sync::Arc;

use serde_json::Value;

/// One compiled condition.
pub struct MatchCondition {
    pub name: String,
    pub expression: String,
    program: cel::Program,
}

impl std::fmt::Debug for MatchCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatchCondition")
            .field("name", &self.name)
            .field("expression", &self.expression)
            .finish()
    }
}

/// What the conditions say about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every condition is true (or there are none): call the webhook.
    Call,
    /// This condition is false: the webhook is skipped.
    Skip(String),
    /// No condition is false but some could not be evaluated: the failure policy decides.
    Error(String),
}

/// Compile a webhook's `matchConditions` list (absent or null: none).
pub fn compile(conditions: &Value) -> Result<Vec<MatchCondition>, String> {
    let Some(list) = conditions.as_array() else {
        return match conditions {
            Value::Null => Ok(Vec::new()),
            other => Err(format!("matchConditions is not a list: {other}")),
        };
    };
    // The API server's limit (validation of admissionregistration.k8s.io/v1).
    if list.len() > 64 {
        return Err(format!("{} matchConditions, more than 64", list.len()));
    }
    let env = Arc::new(cel::Env::stdlib());
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for c in list {
        let name = c["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("a matchCondition without a name: {c}"))?;
        if !seen.insert(name) {
            return Err(format!("matchConditions: duplicate name {name:?}"));
        }
        let expression = c["expression"]
            .as_str()
            .ok_or_else(|| format!("matchCondition {name}: no expression"))?;
        let program = env
            .compile(expression)
            .map_err(|e| format!("matchCondition {name}: compilation failed: {e}"))?;
        out.push(MatchCondition {
            name: name.to_string(),
            expression: expression.to_string(),
            program,
        });
    }
    Ok(out)
}

/// Evaluate the conditions for one request. `request` is the AdmissionRequest as the
/// webhook would receive it (`operation`, `subResource`, `namespace`, `userInfo`, ...).
pub fn evaluate(
    conditions: &[MatchCondition],
    object: Option<&Value>,
    old_object: Option<&Value>,
    request: &Value,
) -> Verdict {
    if conditions.is_empty() {
        return Verdict::Call;
    }
    let to_cel = |v: Option<&Value>| -> Result<cel::Value, String> {
        cel::to_value(v.unwrap_or(&Value::Null)).map_err(|e| e.to_string())
    };
    let mut ctx = cel::Context::with_env(Arc::new(cel::Env::stdlib()));
    for (var, value) in [
        ("object", to_cel(object)),
        ("oldObject", to_cel(old_object)),
        ("request", to_cel(Some(request))),
    ] {
        match value {
            Ok(v) => ctx.add_variable_from_value(var, v),
            Err(e) => return Verdict::Error(format!("{var}: {e}")),
        }
    }
    let mut errors = Vec::new();
    for c in conditions {
        match c.program.execute(&ctx) {
            Ok(cel::Value::Bool(false)) => return Verdict::Skip(c.name.clone()),
            Ok(cel::Value::Bool(true)) => {}
            Ok(other) => errors.push(format!(
                "matchCondition {}: expression must return bool, got {other:?}",
                c.name
            )),
            Err(e) => errors.push(format!("matchCondition {}: {e}", c.name)),
        }
    }
    if errors.is_empty() {
        Verdict::Call
    } else {
        Verdict::Error(errors.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conds(list: Value) -> Vec<MatchCondition> {
        compile(&list).expect("compiles")
    }

    #[test]
    fn false_wins_over_errors_and_errors_over_true() {
        let c = conds(json!([
            {"name": "boom", "expression": "object.nope.deeper == 1"},
            {"name": "no", "expression": "request.operation == 'DELETE'"},
        ]));
        let req = json!({"operation": "CREATE"});
        assert_eq!(
            evaluate(&c, Some(&json!({})), None, &req),
            Verdict::Skip("no".into())
        );
        let c = conds(json!([
            {"name": "boom", "expression": "object.nope.deeper == 1"},
            {"name": "yes", "expression": "request.operation == 'CREATE'"},
        ]));
        assert!(matches!(
            evaluate(&c, Some(&json!({})), None, &req),
            Verdict::Error(e) if e.contains("boom")
        ));
        let c = conds(json!([{"name": "int", "expression": "1"}]));
        assert!(matches!(
            evaluate(&c, None, None, &req),
            Verdict::Error(e) if e.contains("must return bool")
        ));
    }

    #[test]
    fn has_guards_and_null_objects() {
        let c = conds(json!([{"name": "vol", "expression":
            "has(object.spec.volumes) && object.spec.volumes.exists(v, has(v.persistentVolumeClaim))"}]));
        let req = json!({"operation": "CREATE"});
        let pod = |vols: Value| json!({"spec": {"volumes": vols}});
        assert_eq!(
            evaluate(&c, Some(&json!({"spec": {}})), None, &req),
            Verdict::Skip("vol".into())
        );
        assert_eq!(
            evaluate(
                &c,
                Some(&pod(json!([{"name": "a", "emptyDir": {}}]))),
                None,
                &req
            ),
            Verdict::Skip("vol".into())
        );
        assert_eq!(
            evaluate(
                &c,
                Some(&pod(
                    json!([{"name": "a", "persistentVolumeClaim": {"claimName": "x"}}])
                )),
                None,
                &req
            ),
            Verdict::Call
        );
        // DELETE: `object` is null and reading a field of it is an error.
        assert!(matches!(
            evaluate(&c, None, Some(&pod(json!([]))), &req),
            Verdict::Error(_)
        ));
    }

    #[test]
    fn refusals_at_compile_time() {
        assert!(compile(&json!([{"name": "x", "expression": "object.("}])).is_err());
        assert!(compile(&json!([{"expression": "true"}])).is_err());
        assert!(compile(&json!([
            {"name": "x", "expression": "true"}, {"name": "x", "expression": "true"}
        ]))
        .is_err());
        assert!(compile(&json!({"name": "x"})).is_err());
        assert!(compile(&Value::Null).expect("none").is_empty());
    }
}
