//! The readable part of an invalid file: its YAML tree with every entry the raw types reject
//! removed (a misspelt field, a port out of range, a forward of the wrong shape), so validation
//! can still give the values of the rest. The raw types decide what is readable and the
//! validator what it means; nothing here reads a field itself. What is wrong is reported by
//! [`super::Config::parse`]; this only decides what is kept.

use serde_yaml::{Mapping, Value};

use super::raw::RawConfig;

/// `text` as [`RawConfig`], without the entries that stop it from reading as one. `None` when
/// `text` is not YAML or not a mapping.
pub(super) fn readable_part(text: &str) -> Option<RawConfig> {
    let tree: Value = serde_yaml::from_str(text).ok()?;
    let kept = keep_what_fits(tree, &|v| as_config(v).is_some())?;
    as_config(&kept)
}

/// `v` read as a config, once a missing `server` section is added empty (each part is tried on
/// its own, and `{ forwards: [...] }` must not fail for want of a server). Read back from YAML
/// text, as [`super::Config::parse`] reads it: from a tree, serde_yaml refuses `user: 12345`
/// for a string field, from text it does not.
fn as_config(v: &Value) -> Option<RawConfig> {
    let text = serde_yaml::to_string(&with_server(v.clone())).ok()?;
    serde_yaml::from_str(&text).ok()
}

fn with_server(mut v: Value) -> Value {
    if let Value::Mapping(m) = &mut v
        && !m.contains_key("server")
    {
        m.insert("server".into(), Value::Mapping(Mapping::new()));
    }
    v
}

/// `v` if it fits; otherwise, for a mapping or a list, only the entries that fit on their own
/// (each pruned the same way), when those fit together. `fits` judges `v` in its place in the
/// file: for an entry, its parent's `fits` wrapped around a parent holding only that entry.
fn keep_what_fits(v: Value, fits: &dyn Fn(&Value) -> bool) -> Option<Value> {
    if fits(&v) {
        return Some(v);
    }
    let kept = match v {
        Value::Mapping(entries) => {
            let mut kept = Mapping::new();
            for (key, value) in entries {
                let alone = |x: &Value| {
                    fits(&Value::Mapping(Mapping::from_iter([(
                        key.clone(),
                        x.clone(),
                    )])))
                };
                if let Some(value) = keep_what_fits(value, &alone) {
                    kept.insert(key, value);
                }
            }
            Value::Mapping(kept)
        }
        Value::Sequence(items) => {
            let alone = |x: &Value| fits(&Value::Sequence(vec![x.clone()]));
            Value::Sequence(
                items
                    .into_iter()
                    .filter_map(|item| keep_what_fits(item, &alone))
                    .collect(),
            )
        }
        _ => return None,
    };
    fits(&kept).then_some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::RawRemote;

    #[test]
    fn a_valid_file_is_kept_whole() {
        let raw = readable_part(
            "server: { host: h, user: u, ports: [2222] }\nforwards:\n  - { name: a, remote: 5000, target: \"t:1\" }\n",
        )
        .unwrap();
        assert_eq!(raw.server.host.as_deref(), Some("h"));
        assert_eq!(raw.server.ports, Some(vec![2222]));
        assert_eq!(raw.forwards.unwrap().len(), 1);
    }

    #[test]
    fn only_the_entries_the_raw_types_reject_are_dropped() {
        let raw = readable_part(
            "server:\n  host: tunnel.example\n  ports: [22, 99999]\n  usr: x\n  host_keys: [\"SHA256:a\"]\nidentity: [not, a, path]\nforwards:\n  - { name: a, remote: 5000, target: \"jira:443\" }\n  - { name: b, port: 5001, target: \"git:443\" }\n  - [5002]\nkeepalive: { interval: 5s, max_missed: -1 }\nbogus: 1\n",
        )
        .unwrap();
        assert_eq!(raw.server.host.as_deref(), Some("tunnel.example"));
        assert_eq!(raw.server.ports, Some(vec![22]), "99999 is not a u16");
        assert_eq!(raw.server.user, None, "`usr` is not a field");
        assert_eq!(raw.server.host_keys, Some(vec!["SHA256:a".to_string()]));
        assert_eq!(raw.identity, None);
        let forwards = raw.forwards.unwrap();
        assert_eq!(forwards.len(), 2, "the list entry is dropped, `port` too");
        assert!(matches!(forwards[0].remote, Some(RawRemote::Port(5000))));
        assert_eq!(forwards[1].name.as_deref(), Some("b"));
        assert!(forwards[1].remote.is_none());
        assert_eq!(raw.keepalive.interval.as_deref(), Some("5s"));
        assert_eq!(raw.keepalive.max_missed, None);
    }

    #[test]
    fn numbers_read_as_strings_as_in_the_strict_parse() {
        let raw = readable_part("server: { host: h, user: 12345, bogus: 1 }\n").unwrap();
        assert_eq!(raw.server.user.as_deref(), Some("12345"));
    }

    #[test]
    fn a_missing_or_unreadable_server_section_reads_as_empty() {
        let raw = readable_part("server: 5\nforwards: [{ name: a, remote: 1, target: \"t:1\" }]\n")
            .unwrap();
        assert!(raw.server.host.is_none());
        assert_eq!(raw.forwards.unwrap().len(), 1);
        assert!(readable_part("identity: k.pem\n").is_some());
    }

    #[test]
    fn nothing_is_readable_from_broken_yaml_or_a_non_mapping() {
        assert!(readable_part("server: [\n").is_none());
        assert!(readable_part("- a\n- b\n").is_none());
        assert!(readable_part("just text").is_none());
    }
}
