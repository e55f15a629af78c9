//! `allow_file`: the rules of a YAML file.

use super::*;

/// The rules of an `allow_file`: YAML with a top-level `allow:` list of entries (the same form
/// as `http.allow`), or a bare list. Returns the entries, unparsed; the error says what the
/// file holds instead.
pub fn read_rule_file(text: &str) -> Result<Vec<String>, String> {
    use serde_yaml::Value;
    let value: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    match &value {
        Value::Sequence(items) => string_items(items, ""),
        Value::Mapping(map) => {
            if let Some(key) = map.keys().find(|key| key.as_str() != Some("allow")) {
                return Err(format!(
                    "the file has the key {}; a rule file has only `allow:`, a list of \
                     `METHOD PATH` entries",
                    describe_key(key)
                ));
            }
            match map.get("allow") {
                Some(Value::Sequence(items)) => string_items(items, "allow"),
                Some(other) => Err(format!(
                    "`allow` is {}; expected a list of `METHOD PATH` entries, e.g. \
                     `allow: [\"GET /api/**\"]`",
                    describe(other)
                )),
                None => Err(expected_instead("an empty mapping")),
            }
        }
        other => Err(expected_instead(&describe(other))),
    }
}

/// The error of a rule file that holds `found` instead of rules.
pub(super) fn expected_instead(found: &str) -> String {
    format!(
        "the file holds {found}; expected `allow:` with a list of `METHOD PATH` entries \
         (or a bare list of them)"
    )
}

/// The strings of a YAML list; every item that is not one is reported, as `where_[i]`.
pub(super) fn string_items(
    items: &[serde_yaml::Value],
    where_: &str,
) -> Result<Vec<String>, String> {
    let mut entries = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match item {
            serde_yaml::Value::String(entry) => entries.push(entry.clone()),
            other => errors.push(not_a_string(where_, index, other)),
        }
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors.join("; "))
    }
}

pub(super) fn not_a_string(where_: &str, index: usize, item: &serde_yaml::Value) -> String {
    // `- GET: /x` and `- GET /x: y` are mappings to YAML; the customer meant a string.
    let hint = if item.is_mapping() {
        " (YAML reads a ': ' inside an entry as a mapping: put the entry in quotes)"
    } else {
        ""
    };
    format!(
        "{where_}[{index}] is {}, expected a string `METHOD PATH`{hint}",
        describe(item)
    )
}

/// A mapping key for messages: a string key as written.
pub(super) fn describe_key(key: &serde_yaml::Value) -> String {
    match key.as_str() {
        Some(name) => format!("`{name}`"),
        None => describe(key),
    }
}

/// What a YAML value is, in words, for messages.
pub(super) fn describe(value: &serde_yaml::Value) -> String {
    use serde_yaml::Value;
    match value {
        Value::Null => "nothing (null)".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string `{s}`"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(tagged) => format!("a value tagged {}", tagged.tag),
    }
}

/// Why an entry is not two words.
pub(super) fn shape_error(text: &str) -> String {
    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    match words.as_slice() {
        [] => format!("an empty entry: write `METHOD PATH`, e.g. {RULE_EXAMPLE}"),
        [path] if path.starts_with('/') => {
            format!("`{path}` has no method: write `METHOD PATH`, e.g. `GET {path}`")
        }
        [method] => format!("`{method}` has no path: write `METHOD PATH`, e.g. {RULE_EXAMPLE}"),
        more => format!(
            "`{text}` has {} words: write `METHOD PATH` with one space between (a space inside \
             a path is written %20)",
            more.len()
        ),
    }
}
