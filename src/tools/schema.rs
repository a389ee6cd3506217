//! A JSON Schema validator for tool arguments.
//!
//! Supports the keywords tool schemas use in practice: `type` (string or list), `properties`,
//! `required`, `additionalProperties` (boolean or schema), `items`, `enum`, `const`,
//! `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `minLength`, `maxLength`,
//! `minItems`, `maxItems`, `anyOf`, `oneOf`, `allOf`. Other keywords (`pattern`, `format`,
//! `$ref`...) are accepted and not checked.

use crate::model::json_scan::Scanner;
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

/// Checks the JSON text `args` against `schema`: [`validate`] of the parsed text, or the
/// parse error. Most arguments are proven valid straight from the text (see
/// [`accepts_text`]), with no tree built; the rest, and every failure, take the full path.
pub fn validate_text(schema: &Value, args: &str) -> Result<(), TextError> {
    if accepts_text(schema, args) {
        return Ok(());
    }
    let v: Value = serde_json::from_str(args).map_err(|e| TextError::Json(e.to_string()))?;
    validate(schema, &v).map_err(TextError::Schema)
}

/// Why [`validate_text`] refused arguments.
#[derive(Debug, PartialEq)]
pub enum TextError {
    /// Not valid JSON (the parser's message).
    Json(String),
    /// Valid JSON that does not match the schema (as [`validate`] words it).
    Schema(String),
}

/// Whether `text` is one JSON value that `schema` accepts, proven in one pass over the text
/// for the schemas tools use most (`type`, `properties`, `required`, `additionalProperties`,
/// `items`, and keywords that are not checked). `false` means "not proven": a keyword with
/// bounds or alternatives (`enum`, `const`, `minimum`, `minLength`, `anyOf`...), an escaped
/// key, a fractional number where an integer is wanted, or a value that fails; [`validate`]
/// then decides and words the error.
pub fn accepts_text(schema: &Value, text: &str) -> bool {
    let mut s = Scanner::new(text);
    scan_accepts(schema, &mut s).is_some() && s.at_end()
}

/// The keywords of one schema that [`scan_accepts`] checks.
#[derive(Default)]
struct Scanned<'a> {
    ty: Option<&'a Value>,
    properties: Option<&'a serde_json::Map<String, Value>>,
    required: &'a [Value],
    additional: Option<&'a Value>,
    items: Option<&'a Value>,
}

/// The value at the scanner, consumed and accepted by `schema`; `None` when not proven.
fn scan_accepts(schema: &Value, s: &mut Scanner) -> Option<()> {
    let sch = match schema {
        Value::Object(sch) => sch,
        Value::Bool(false) => return None,
        _ => return skip_strict(s),
    };
    // One pass over the schema's keywords: those with bounds or alternatives are left to
    // the full check, those nobody checks are passed over.
    let mut k = Scanned::default();
    for (key, v) in sch {
        match key.as_str() {
            "type" => k.ty = Some(v),
            "properties" => k.properties = v.as_object(),
            "required" => match v {
                Value::Array(r) if r.len() <= 64 => k.required = r,
                Value::Array(_) => return None,
                _ => {}
            },
            "additionalProperties" => k.additional = Some(v),
            "items" => k.items = Some(v),
            "enum" | "const" | "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum"
            | "minLength" | "maxLength" | "minItems" | "maxItems" | "allOf" | "anyOf" | "oneOf" => {
                return None
            }
            _ => {}
        }
    }
    let next = s.peek()?;
    let type_fits = |t: &str| match t {
        "object" => next == b'{',
        "array" => next == b'[',
        "string" => next == b'"',
        "number" | "integer" => next == b'-' || next.is_ascii_digit(),
        "boolean" => next == b't' || next == b'f',
        "null" => next == b'n',
        _ => true,
    };
    let wants_integer = match k.ty {
        None => false,
        Some(Value::String(t)) => {
            if !type_fits(t) {
                return None;
            }
            t == "integer"
        }
        Some(Value::Array(ts)) => {
            let fits = |t: &&Value| t.as_str().is_some_and(type_fits);
            // An integer is proven only where no other listed type admits the number.
            let mut fitting = ts.iter().filter(fits);
            let first = fitting.next()?;
            first == "integer" && fitting.all(|t| t == "integer")
        }
        Some(_) => false,
    };
    match next {
        b'{' => scan_object(&k, s),
        b'[' => match k.items {
            Some(items) => s.array(|s, _| scan_accepts(items, s)),
            None => skip_strict(s),
        },
        // Digits alone are an integer; a fraction may be one too (1.0), which the full
        // check works out.
        b'-' | b'0'..=b'9' if wants_integer => (!plain_number(s)?.contains('.')).then_some(()),
        _ => skip_strict(s),
    }
}

/// Any value, skipped, proven to parse as a [`Value`]: strings decode strictly (no lone
/// surrogates), and numbers are within `f64`'s range (no exponent, at most 300 characters).
fn skip_strict(s: &mut Scanner) -> Option<()> {
    match s.peek()? {
        b'{' => s.object(|s, _| skip_strict(s)),
        b'[' => s.array(|s, _| skip_strict(s)),
        b'"' => s.skip_string_strict(),
        b'-' | b'0'..=b'9' => plain_number(s).map(|_| ()),
        _ => s.skip_value(),
    }
}

/// A number without an exponent and short enough that it is a finite `f64`.
fn plain_number<'a>(s: &mut Scanner<'a>) -> Option<&'a str> {
    let n = s.number_text()?;
    (n.len() <= 300 && !n.contains(['e', 'E'])).then_some(n)
}

fn scan_object(k: &Scanned, s: &mut Scanner) -> Option<()> {
    let (props, extra, required) = (k.properties, k.additional, k.required);
    let mut found = 0u64;
    s.object(|s, key| {
        // Keys with escapes give up in the scanner, so a raw key is the key.
        let key = std::str::from_utf8(key).ok()?;
        if let Some(i) = required.iter().position(|r| r.as_str() == Some(key)) {
            found |= 1 << i;
        }
        match props.and_then(|p| p.get(key)) {
            Some(sub) => scan_accepts(sub, s),
            None => match extra {
                Some(Value::Bool(false)) => None,
                Some(sub @ Value::Object(_)) => scan_accepts(sub, s),
                _ => skip_strict(s),
            },
        }
    })?;
    // Every named requirement met (entries that are not strings are not checked).
    let all = required
        .iter()
        .enumerate()
        .all(|(i, r)| !r.is_string() || found & (1 << i) != 0);
    all.then_some(())
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

    fn schemas() -> Vec<Value> {
        vec![
            json!({"type":"object"}),
            json!({"type":"object","properties":{
                "city":{"type":"string"},"days":{"type":"integer"},"n":{"type":["number","null"]},
                "tags":{"type":"array","items":{"type":"string"}},
                "opts":{"type":"object","properties":{"deep":{"type":"boolean"}},"required":["deep"]}},
                "required":["city"],"additionalProperties":false}),
            json!({"type":"object","additionalProperties":{"type":"integer"}}),
            json!({"type":"object","properties":{"k":{"type":["integer","string"]}}}),
            json!({"type":"object","properties":{"k":{"type":"string","minLength":2}}}),
            json!({"type":"object","properties":{"k":{"enum":[1,2]}}}),
            json!({"type":"object","properties":{"k":false}}),
            json!({"type":"object","properties":{"k":true,"t":{"type":"teapot"}},"required":[1,"k"]}),
            json!(true),
            json!({}),
        ]
    }

    /// The one-pass check never accepts what the full check refuses, for many schemas and
    /// thousands of mutated arguments (invalid JSON, wrong types, lone surrogates, numbers out
    /// of range among them); and it does prove the plain cases it is there for.
    #[test]
    fn text_check_agrees_with_the_full_check() {
        let bases = [
            r#"{"city":"Paris","days":3,"n":null,"tags":["a","b"],"opts":{"deep":true}}"#,
            r#"{"city":"Par\u00eds \ud83d\ude00","days":-12,"n":1.5e3,"k":"xy","t":[]}"#,
            r#" { "k" : 1 , "city" : "x" , "days" : 1.0 , "tags" : [ ] } "#,
            r#"{"city":"x","days":12345678901234567890123,"k":2,"extra":7}"#,
            r#"{"city":"\ud800","n":1e999,"k":[1,{"a":"b"}]}"#,
            r#"[1,2,{"city":"x"}]"#,
        ];
        let mut cases: Vec<String> = bases.iter().map(|b| b.to_string()).collect();
        cases.extend(crate::model::json_scan::mutants(
            &bases,
            300,
            3,
            br#"{}[]":,\0129.eE-uadtrfnl "#,
        ));
        let (mut proven, mut checked) = (0, 0);
        for schema in schemas() {
            for text in &cases {
                let full = serde_json::from_str::<Value>(text)
                    .map_err(|e| e.to_string())
                    .and_then(|v| validate(&schema, &v));
                if accepts_text(&schema, text) {
                    proven += 1;
                    assert!(
                        full.is_ok(),
                        "accepted {text} for {schema}, full check: {full:?}"
                    );
                }
                checked += 1;
                let via_text = validate_text(&schema, text);
                assert_eq!(via_text.is_ok(), full.is_ok(), "{text} for {schema}");
            }
        }
        assert!(proven > checked / 20, "only {proven} of {checked} proven");
        // The plain shapes are proven, not left to the full path.
        let s = &schemas()[1];
        assert!(accepts_text(s, bases[0]));
        assert!(accepts_text(
            s,
            r#"{"city":"x","tags":[],"opts":{"deep":false}}"#
        ));
        assert!(accepts_text(&schemas()[0], r#"{"n": 0}"#));
        assert!(!accepts_text(s, r#"{"city":"x","days":1.0}"#)); // an integer in disguise: full path
        assert!(validate_text(s, r#"{"city":"x","days":1.0}"#).is_ok());
        assert!(!accepts_text(s, r#"{"city":"\ud800"}"#));
        assert!(matches!(
            validate_text(s, r#"{"city":"\ud800"}"#),
            Err(TextError::Json(_))
        ));
        assert!(accepts_text(
            s,
            r#"{"city":"\ud83d\ude00 \u00ed \" \\ \n"}"#
        ));
        assert!(
            matches!(validate_text(s, r#"{"days":1}"#), Err(TextError::Schema(e)) if e.contains("city"))
        );
        assert!(matches!(
            validate_text(s, r#"{"city":"x","n":1e999}"#),
            Err(TextError::Json(_))
        ));
    }

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
