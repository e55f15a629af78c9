//! agent.yaml as a loose YAML tree, and the line of any field in it.
//!
//! The file is read into a `serde_yaml::Value` (no types imposed), so that [`super::read`] can
//! look at every field and report every problem at once. A `Value` keeps no positions; the line
//! of a field is found by walking the text again with serde_yaml and stopping with an error at
//! that field, whose position serde_yaml records. Messages from here never quote the file's
//! values: serde_yaml's syntax errors describe the structure only, and a duplicate key is named
//! only when it looks like a field name.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_yaml::Value;

use super::Problem;

/// One step of a field's path: `server`, `forwards`, `[2]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    Key(String),
    Index(usize),
}

/// `text` as a tree, or the one problem that stops YAML from reading it (with its line).
pub(super) fn parse(text: &str) -> Result<Value, Problem> {
    serde_yaml::from_str::<Value>(text).map_err(|e| syntax_problem(text, &e))
}

fn syntax_problem(text: &str, e: &serde_yaml::Error) -> Problem {
    let msg = e.to_string();
    // serde_yaml appends " at line L column C" (and sometimes more context after a comma).
    let body = msg
        .split(" at line ")
        .next()
        .unwrap_or_default()
        .to_string();
    let line = e.location().map(|l| l.line());
    let column = e.location().map(|l| l.column());
    if let Some((at, key)) = body.split_once("duplicate entry with key ") {
        return duplicate(text, at.trim_end_matches(": "), key, line.zip(column));
    }
    let message = match column {
        Some(c) => format!("{body} (column {c})"),
        None => body,
    };
    problem(
        line,
        message,
        "fix the YAML syntax (indentation, a missing ':' or quote) at that line",
    )
}

/// serde_yaml places a duplicate key at the start of its mapping (`at`, its path, "." at the
/// top); the line to fix is the second occurrence.
fn duplicate(text: &str, at: &str, key: &str, start: Option<(usize, usize)>) -> Problem {
    let key = key.trim_matches('"');
    let line = start.map(|(l, c)| second_occurrence(text, l, c, key).unwrap_or(l));
    let mut p = problem(
        line,
        "duplicate field".into(),
        "the field is written twice in the same section: keep one",
    );
    if is_name(key) {
        p.message = format!("duplicate field `{key}`");
        p.field = match at {
            "." | "" => key.to_string(),
            at => format!("{at}.{key}"),
        };
    }
    p
}

fn problem(line: Option<usize>, message: String, fix: &str) -> Problem {
    Problem {
        field: "yaml".into(),
        message,
        fix: Some(fix.to_string()),
        line,
    }
}

/// Whether `key` may be shown in a message: a plain field-like name, never something pasted
/// where a key was expected (a URL, a token).
pub(super) fn is_name(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 40
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A mapping key as text (`5: x` has the key "5"); `None` for a key that is itself a list or
/// mapping.
pub(super) fn key_text(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some("~".into()),
        _ => None,
    }
}

/// `forwards[2].access.windows[0]` as steps; `None` when `field` is not such a path.
pub(super) fn steps(field: &str) -> Option<Vec<Step>> {
    let mut out = Vec::new();
    for part in field.split('.') {
        let (key, indexes) = part.split_once('[').unwrap_or((part, ""));
        if !is_name(key) {
            return None;
        }
        out.push(Step::Key(key.to_string()));
        if !indexes.is_empty() {
            for index in format!("[{indexes}").split('[').skip(1) {
                out.push(Step::Index(index.strip_suffix(']')?.parse().ok()?));
            }
        }
    }
    Some(out)
}

/// The line (1-based) of the field at `path`; for a field that is not in the file (a missing
/// one), the line of its nearest enclosing section. `None` at the top level.
pub(super) fn line_of(text: &str, path: &[Step]) -> Option<usize> {
    (1..=path.len())
        .rev()
        .find_map(|n| exact_line(text, &path[..n]))
}

/// Raised at the sought field, so that serde_yaml records its position.
const FOUND: &str = "\u{0}found";

fn exact_line(text: &str, path: &[Step]) -> Option<usize> {
    let e = Find { path }
        .deserialize(serde_yaml::Deserializer::from_str(text))
        .err()?;
    // serde_yaml puts the path in front of the message.
    (e.to_string().contains(FOUND))
        .then(|| e.location().map(|l| l.line()))
        .flatten()
}

/// Walks down `path`, skipping everything else; errors with [`FOUND`] at the last step.
struct Find<'a> {
    path: &'a [Step],
}

impl<'de> DeserializeSeed<'de> for Find<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Find<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("anything")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Step::Key(want), rest)) = self.path.split_first() else {
            return drain_map(map);
        };
        while let Some(found) = map.next_key_seed(KeyIs {
            want,
            last: rest.is_empty(),
        })? {
            if found {
                return map.next_value_seed(Find { path: rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Step::Index(want), rest)) = self.path.split_first() else {
            return drain_seq(seq);
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        if rest.is_empty() {
            return seq.next_element_seed(Here).map(|_| ());
        }
        seq.next_element_seed(Find { path: rest })?;
        drain_seq(seq)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, e: A) -> Result<(), A::Error> {
        // A tagged value (`!tag x`): not a field the agent reads; skip it.
        let (IgnoredAny, v) = e.variant::<IgnoredAny>()?;
        de::VariantAccess::newtype_variant::<IgnoredAny>(v).map(|_| ())
    }
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// A list item that is the sought field: fails as soon as it is read.
struct Here;

impl<'de> DeserializeSeed<'de> for Here {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(Here)
    }
}

impl<'de> Visitor<'de> for Here {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("anything")
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
}

/// Reads a mapping key: `Ok(true)` when it is `want` (and not the last step), an error with
/// [`FOUND`] when it is `want` and the last step (the key's own position is the field's line).
struct KeyIs<'a> {
    want: &'a str,
    last: bool,
}

impl KeyIs<'_> {
    fn check<E: de::Error>(&self, key: &str) -> Result<bool, E> {
        match (key == self.want, self.last) {
            (true, true) => Err(E::custom(FOUND)),
            (found, _) => Ok(found),
        }
    }
}

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.check(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        self.check("~")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        drain_map(map).map(|_| false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        drain_seq(seq).map(|_| false)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, e: A) -> Result<bool, A::Error> {
        Find { path: &[] }.visit_enum(e).map(|_| false)
    }
}

/// The line (1-based) of `key`'s second occurrence in the block mapping that starts at `line`,
/// `column` (serde_yaml's location of a duplicate key); None for anything else (flow style,
/// quoted keys), where the section's start is the best place to point at.
fn second_occurrence(text: &str, line: usize, column: usize, key: &str) -> Option<usize> {
    let indent = column.checked_sub(1)?;
    let mut seen = 0;
    for (i, l) in text.lines().enumerate().skip(line.checked_sub(1)?) {
        let rest = l.trim_start_matches([' ', '-']);
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        let col = l.len() - rest.len();
        let starts_item = l[..col].contains('-');
        // The section ends where something less indented, or the next list item, begins.
        if i + 1 > line && (col < indent || (col == indent && starts_item)) {
            return None;
        }
        let is_key = rest
            .strip_prefix(key)
            .is_some_and(|after| after.trim_start().starts_with(':'));
        if col == indent && is_key {
            seen += 1;
            if seen == 2 {
                return Some(i + 1);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "server:\n  host: h\n  ports: [22,\n    443]\nforwards:\n  - name: a\n    remote: 5000\n  - { name: b,\n      target: x }\n";

    fn line(field: &str) -> Option<usize> {
        line_of(TEXT, &steps(field).unwrap())
    }

    #[test]
    fn lines_of_keys_items_and_missing_fields() {
        assert_eq!(line("server"), Some(1));
        assert_eq!(line("server.host"), Some(2));
        assert_eq!(line("server.ports[1]"), Some(4));
        assert_eq!(line("forwards[0]"), Some(6));
        assert_eq!(line("forwards[0].remote"), Some(7));
        assert_eq!(line("forwards[1].target"), Some(9), "flow style too");
        assert_eq!(line("forwards[1].remote"), Some(8), "missing: its forward");
        assert_eq!(line("server.user"), Some(1), "missing: its section");
        assert_eq!(line("proxy"), None);
        assert_eq!(line("forwards[7].name"), Some(5));
    }

    #[test]
    fn paths_are_read_from_field_names() {
        assert_eq!(
            steps("forwards[2].access.windows[0]").unwrap(),
            [
                Step::Key("forwards".into()),
                Step::Index(2),
                Step::Key("access".into()),
                Step::Key("windows".into()),
                Step::Index(0)
            ]
        );
        assert!(steps("").is_none());
        assert!(steps("a b").is_none());
    }

    #[test]
    fn a_duplicate_names_the_second_line_and_no_value() {
        let p = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(
            (p.line, p.message.as_str()),
            (Some(3), "duplicate field `a`")
        );
        let p =
            parse("? \"https://u:secret@h/x\"\n: 1\n\"https://u:secret@h/x\": 2\n").unwrap_err();
        assert!(!p.message.contains("secret"), "{p:?}");
    }
}
