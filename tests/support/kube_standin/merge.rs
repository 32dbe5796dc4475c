//! A simplified strategic merge patch (`application/strategic-merge-patch+json`), enough
//! for what client-side `kubectl apply` sends for pods, claims and workloads.
//!
//! Maps merge recursively and `null` deletes a key, as in a JSON merge patch. Lists of
//! objects merge by a merge key guessed from the elements (`name`, `containerPort`,
//! `mountPath`, `devicePath`, `ip`), as the Kubernetes types declare it for
//! containers, volumes, env, ports and mounts; other lists are replaced. Directives:
//! `$patch: replace|delete` (in maps and list elements), `$deleteFromPrimitiveList/<k>`;
//! `$setElementOrder/<k>` and `$retainKeys` are accepted and ignored (element order is
//! kept from the live object, then new elements appended).
//! The real one reads `patchStrategy`/`patchMergeKey` from the Go types or OpenAPI.

use serde_json::{Map, Value};

const MERGE_KEYS: [&str; 5] = ["name", "containerPort", "mountPath", "devicePath", "ip"];

pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(pmap) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    match pmap.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = Value::Object(without_directives(pmap));
            return;
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let tmap = target.as_object_mut().expect("made an object above");
    for (k, v) in pmap {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(del)) = (
                tmap.get_mut(field).and_then(Value::as_array_mut),
                v.as_array(),
            ) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            tmap.remove(k);
            continue;
        }
        match (tmap.get_mut(k), v) {
            (Some(t @ Value::Object(_)), Value::Object(_)) => strategic_merge(t, v),
            (Some(Value::Array(t)), Value::Array(p)) => merge_list(t, p),
            (_, _) => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, v);
                tmap.insert(k.clone(), fresh);
            }
        }
    }
}

fn without_directives(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn merge_key(items: &[Value]) -> Option<&'static str> {
    if items.is_empty() || !items.iter().all(Value::is_object) {
        return None;
    }
    MERGE_KEYS
        .into_iter()
        .find(|k| items.iter().all(|i| i.get(*k).is_some()))
}

fn merge_list(target: &mut Vec<Value>, patch: &[Value]) {
    let Some(key) = merge_key(patch).or_else(|| merge_key(target)) else {
        *target = patch.to_vec();
        return;
    };
    for p in patch {
        let id = p.get(key);
        let pos = target.iter().position(|t| t.get(key) == id);
        let delete = p.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                target.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut target[i], p),
            (None, false) => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, p);
                target.push(fresh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_containers_by_name_and_deletes_with_null() {
        let mut t = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "app", "image": "a:1"}, {"name": "side", "image": "s:1"}]}}}});
        let p = json!({"metadata": {"labels": {"b": null, "c": "3"}},
            "spec": {"replicas": 3, "template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}, {"name": "side"}],
                "containers": [{"name": "app", "image": "a:2"}]}}}});
        strategic_merge(&mut t, &p);
        assert_eq!(
            t,
            json!({"metadata": {"labels": {"a": "1", "c": "3"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "app", "image": "a:2"}, {"name": "side", "image": "s:1"}]}}}})
        );
    }
}
