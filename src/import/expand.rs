//! supervisord's value syntax: `%(program_name)s`-style expansions (only those import can know;
//! `%(ENV_X)s` and machine-dependent ones are errors) and `environment=KEY="v",KEY2=v2`.

use super::ImportError;
use super::words::{self, Dialect};

/// supervisord's `%(name)s` expansion of a value. Only what import can know is expanded.
pub fn expand(value: &str, program: &str, numprocs: u32, here: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('%') {
            out.push('%');
            rest = r;
            continue;
        }
        let Some((name, r)) = after
            .strip_prefix('(')
            .and_then(|a| a.split_once(")s"))
            .filter(|(n, _)| !n.contains(['(', ')', '%']))
        else {
            return Err(format!(
                "has a lone `%` that supervisord cannot expand (it fails on this too); write `%%` for a literal %: {value}"
            ));
        };
        match name {
            "program_name" | "group_name" => out.push_str(program),
            "process_num" => out.push('0'),
            "numprocs" => out.push_str(&numprocs.to_string()),
            "here" => out.push_str(here),
            n if n.starts_with("ENV_") => {
                return Err(format!(
                    "uses %({n})s, which supervisord took from its own environment; import cannot know its value"
                ));
            }
            n => {
                return Err(format!(
                    "uses %({n})s, which depends on the machine supervisord ran on"
                ));
            }
        }
        rest = r;
    }
    out.push_str(rest);
    Ok(out)
}

/// `environment=KEY="val",KEY2=val2`.
pub fn environment(value: &str, line: usize) -> Result<Vec<(String, String)>, ImportError> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    for c in value.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                cur.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (None, ',') => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    let mut out = Vec::new();
    for p in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let Some((k, v)) = p.split_once('=') else {
            return Err(ImportError::at(
                line,
                format!("environment= entry `{p}` is not KEY=value"),
                None,
            ));
        };
        let v = v.trim();
        let v = words::split(v, Dialect::Shlex)
            .ok()
            .and_then(|w| (w.len() == 1).then(|| w[0].text.clone()))
            .unwrap_or_else(|| v.to_string());
        out.push((k.trim().to_string(), v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansions() {
        assert_eq!(
            expand("a %(program_name)s %(here)s/k 100%%", "P", 1, "/etc/x").unwrap(),
            "a P /etc/x/k 100%"
        );
        assert!(
            expand("%(ENV_HOME)s", "P", 1, "/")
                .unwrap_err()
                .contains("ENV_HOME")
        );
        assert!(
            expand("ControlPath=%h", "P", 1, "/")
                .unwrap_err()
                .contains("%%")
        );
    }

    #[test]
    fn environment_pairs() {
        let e = environment("AUTOSSH_GATETIME=0, A=\"x,y\"", 3).unwrap();
        assert_eq!(
            e,
            [
                ("AUTOSSH_GATETIME".to_string(), "0".to_string()),
                ("A".to_string(), "x,y".to_string())
            ]
        );
        assert_eq!(environment("nonsense", 3).unwrap_err().line, Some(3));
    }
}
