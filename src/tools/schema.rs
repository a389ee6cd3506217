//! A JSON Schema validator for tool arguments.
//!
//! Supports the keywords tool schemas use in practice: `type` (string or list), `properties`,
//! `required`, `additionalProperties` (boolean or schema), `items`, `enum`, `const`,
//! `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `minLength`, `maxLength`,
//! `minItems`, `maxItems`, `anyOf`, `oneOf`, `allOf`. Other keywords (`pattern`, `format`,
//! `$ref`...) are accepted and not checked.

use serde_json::Value;

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => {
            v.as_i64().is_some()
                || v.as_u64().is_some()
                || v.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    }
}

/// Checks `value` against `schema`; the error names the path of the first problem.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    check(schema, value, "$")
}

fn check(schema: &Value, v: &Value, path: &str) -> Result<(), String> {
    let Some(s) = schema.as_object() else {
        return match schema {
            Value::Bool(false) => Err(format!("{path}: no value is allowed here")),
            _ => Ok(()),
        };
    };
    match s.get("type") {
        Some(Value::String(t)) if !type_ok(t, v) => {
            return Err(format!(
                "{path}: expected {t}, got {}",
                crate::config::json_kind(v)
            ))
        }
        Some(Value::Array(ts)) if !ts.iter().any(|t| t.as_str().is_some_and(|t| type_ok(t, v))) => {
            return Err(format!(
                "{path}: expected one of {}, got {}",
                Value::Array(ts.clone()),
                crate::config::json_kind(v)
            ))
        }
        _ => {}
    }
    if let Some(Value::Array(options)) = s.get("enum") {
        if !options.contains(v) {
            return Err(format!(
                "{path}: must be one of {}",
                Value::Array(options.clone())
            ));
        }
    }
    if let Some(c) = s.get("const") {
        if c != v {
            return Err(format!("{path}: must be {c}"));
        }
    }
    if let Some(x) = v.as_f64() {
        let num = |k: &str| s.get(k).and_then(Value::as_f64);
        if num("minimum").is_some_and(|m| x < m) {
            return Err(format!("{path}: must be >= {}", s["minimum"]));
        }
        if num("maximum").is_some_and(|m| x > m) {
            return Err(format!("{path}: must be <= {}", s["maximum"]));
        }
        if num("exclusiveMinimum").is_some_and(|m| x <= m) {
            return Err(format!("{path}: must be > {}", s["exclusiveMinimum"]));
        }
        if num("exclusiveMaximum").is_some_and(|m| x >= m) {
            return Err(format!("{path}: must be < {}", s["exclusiveMaximum"]));
        }
    }
    let count = |k: &str| s.get(k).and_then(Value::as_u64);
    if let Some(text) = v.as_str() {
        let n = text.chars().count() as u64;
        if count("minLength").is_some_and(|m| n < m) {
            return Err(format!(
                "{path}: must have at least {} characters",
                s["minLength"]
            ));
        }
        if count("maxLength").is_some_and(|m| n > m) {
            return Err(format!(
                "{path}: must have at most {} characters",
                s["maxLength"]
            ));
        }
    }
    if let Some(items) = v.as_array() {
        let n = items.len() as u64;
        if count("minItems").is_some_and(|m| n < m) {
            return Err(format!(
                "{path}: must have at least {} items",
                s["minItems"]
            ));
        }
        if count("maxItems").is_some_and(|m| n > m) {
            return Err(format!("{path}: must have at most {} items", s["maxItems"]));
        }
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                check(item_schema, item, &format!("{path}[{i}]"))?;
            }
        }
    }
    if let Some(obj) = v.as_object() {
        if let Some(Value::Array(req)) = s.get("required") {
            for r in req.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    return Err(format!("{path}: missing required property \"{r}\""));
                }
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, val) in obj {
            let sub = format!("{path}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(ps) => check(ps, val, &sub)?,
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return Err(format!("{path}: unexpected property \"{k}\""))
                    }
                    Some(extra @ Value::Object(_)) => check(extra, val, &sub)?,
                    _ => {}
                },
            }
        }
    }
    if let Some(Value::Array(all)) = s.get("allOf") {
        for sub in all {
            check(sub, v, path)?;
        }
    }
    if let Some(Value::Array(any)) = s.get("anyOf") {
        if !any.iter().any(|sub| check(sub, v, path).is_ok()) {
            return Err(format!("{path}: matches none of anyOf"));
        }
    }
    if let Some(Value::Array(one)) = s.get("oneOf") {
        let n = one.iter().filter(|sub| check(sub, v, path).is_ok()).count();
        if n != 1 {
            return Err(format!(
                "{path}: must match exactly one of oneOf (matches {n})"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validates_common_tool_schemas() {
        let schema = json!({"type":"object","properties":{
            "city":{"type":"string","minLength":1},
            "days":{"type":"integer","minimum":1,"maximum":7},
            "units":{"enum":["c","f"]},
            "tags":{"type":"array","items":{"type":"string"},"maxItems":2}},
            "required":["city"],"additionalProperties":false});
        assert!(validate(
            &schema,
            &json!({"city":"Paris","days":3,"units":"c","tags":["a"]})
        )
        .is_ok());
        for (bad, needle) in [
            (json!({}), "missing required property \"city\""),
            (json!({"city":5}), "$.city: expected string"),
            (json!({"city":""}), "at least 1"),
            (json!({"city":"x","days":9}), "$.days: must be <= 7"),
            (json!({"city":"x","days":1.5}), "expected integer"),
            (json!({"city":"x","units":"k"}), "must be one of"),
            (json!({"city":"x","tags":["a",1]}), "$.tags[1]"),
            (json!({"city":"x","tags":["a","b","c"]}), "at most 2 items"),
            (
                json!({"city":"x","extra":1}),
                "unexpected property \"extra\"",
            ),
            (json!([1]), "expected object"),
        ] {
            let e = validate(&schema, &bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        assert!(validate(
            &json!({"anyOf":[{"type":"string"},{"type":"null"}]}),
            &json!(null)
        )
        .is_ok());
        assert!(validate(
            &json!({"oneOf":[{"type":"number"},{"type":"integer"}]}),
            &json!(1)
        )
        .is_err());
    }
}
