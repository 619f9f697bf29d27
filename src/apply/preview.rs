//! A decided write carried out on the object itself, pure: the release
//! patch as it is, the server-side-apply body merged the way the API server
//! merges it. The admission webhook answers with the result; `kubectl
//! lifecycle diff` and `explain` show it.

use serde_json::Value;

use crate::apply::decide::Write;

/// One policy's writes on the object: None when its release patch does not
/// apply (then the background path does it, as without a webhook).
pub fn carry_out(object: &Value, write: &Write) -> Option<Value> {
    let mut next = object.clone();
    if let Some(ops) = &write.release {
        let patch: json_patch::Patch = serde_json::from_value(ops.clone()).ok()?;
        json_patch::patch(&mut next, &patch).ok()?;
    }
    if let Some(body) = &write.apply {
        // The body's identity (name, kind) is the object's already; a create
        // with generateName has no name yet, so only these two are merged.
        if let Some(a) = body.pointer("/metadata/annotations") {
            merge(at(&mut next, &["metadata", "annotations"]), a, false);
        }
        if let Some(spec) = body.get("spec") {
            merge(at(&mut next, &["spec"]), spec, false);
        }
    }
    Some(next)
}

/// The value at `path`, made an empty object where missing.
fn at<'a>(mut v: &'a mut Value, path: &[&str]) -> &'a mut Value {
    for key in path {
        if !v.is_object() {
            *v = Value::Object(Default::default());
        }
        v = v
            .as_object_mut()
            .expect("made an object above")
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    v
}

/// `from` merged into `into` as server-side apply merges the bodies the
/// policies send: maps key by key, container lists by name, a hook handler
/// (a key of `lifecycle`) replaced whole, since the background path's
/// release patch removes a handler of another type before its apply
/// (`Plan::replaces`).
fn merge(into: &mut Value, from: &Value, handlers: bool) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(x) if !handlers => merge(x, v, k == "lifecycle"),
                    _ => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for item in b {
                let name = item.get("name");
                match a
                    .iter_mut()
                    .find(|x| name.is_some() && x.get("name") == name)
                {
                    Some(x) => merge(x, item, false),
                    None => a.push(item.clone()),
                }
            }
        }
        (into, from) => *into = from.clone(),
    }
}
