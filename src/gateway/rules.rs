//! The allowlist of an HTTP forward: `METHOD PATH[?NAME=VALUE&...]` rules, and the normal form
//! a request target must have before any rule is looked at. (STUB: signatures fixed, bodies
//! being written.)

/// One `allow` entry as written: `GET /api/v4/projects/*/repository/files/**`,
/// `GET /**/info/refs?service=git-upload-pack`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    text: String,
}

impl Rule {
    /// Parses one entry; the error says what is wrong and how to write it (it may quote the
    /// entry: rules are not secret).
    pub fn parse(text: &str) -> Result<Rule, String> {
        let _ = text;
        unimplemented!()
    }

    /// The entry as written (normalised spacing), for the audit trail and the logs.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The method this rule names (`GET`, `CONNECT`...).
    pub fn method(&self) -> &str {
        unimplemented!()
    }

    /// Whether a request with `method` and the request target's `path` (before `?`) and
    /// `query` (after `?`, without it) is allowed by this rule. Exact, case-sensitive, no
    /// percent-decoding. The target is already in normal form ([`normal_form`]).
    pub fn matches(&self, method: &str, path: &str, query: Option<&str>) -> bool {
        let _ = (method, path, query);
        unimplemented!()
    }
}

/// The rules of one forward, in order; the first that matches allows the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules(Vec<Rule>);

impl Rules {
    /// Every entry parsed; the errors are (index, message) for each bad entry, all at once.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Rules, Vec<(usize, String)>> {
        let _ = entries;
        unimplemented!()
    }

    /// `self` then `more`.
    pub fn extend(&mut self, more: Rules) {
        self.0.extend(more.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.0.iter()
    }

    /// The first rule that allows the request, if any.
    pub fn first_match(&self, method: &str, path: &str, query: Option<&str>) -> Option<&Rule> {
        self.0.iter().find(|r| r.matches(method, path, query))
    }

    /// Whether some rule names `method` (CONNECT and upgrades are refused `405` otherwise).
    pub fn names_method(&self, method: &str) -> bool {
        self.0.iter().any(|r| r.method() == method)
    }
}

/// Why a request target is not in normal form (the request is refused `400`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotNormal {
    /// Not origin-form (`/path`): absolute-form (`http://host/...`), authority-form
    /// (`host:port`), asterisk-form (`*`).
    NotOriginForm,
    /// A `.` or `..` segment, percent-encoded or not.
    DotSegment,
    /// An empty segment (`//`).
    EmptySegment,
    /// A `\`, raw or percent-encoded.
    Backslash,
    /// A `#` fragment.
    Fragment,
    /// A byte that has no place in a request target (a control character, `%00`, a bad
    /// percent escape).
    BadByte,
}

impl std::fmt::Display for NotNormal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let _ = f;
        unimplemented!()
    }
}

/// Checks the request target exactly as the vendor sent it (`/a/b?x=1`, fragment included if
/// sent). Ok: origin-form with no dot segment, no empty segment, no backslash, no fragment.
pub fn normal_form(target: &str) -> Result<(), NotNormal> {
    let _ = target;
    unimplemented!()
}

/// The rules of an `allow_file`: YAML with a top-level `allow:` list of entries (the same form
/// as `http.allow`), or a bare list. Returns the entries, unparsed; the error says what the
/// file holds instead.
pub fn read_rule_file(text: &str) -> Result<Vec<String>, String> {
    let _ = text;
    unimplemented!()
}
