//! The spec walker: reads the spanned TOML tree key by key, so every problem (syntax, unknown
//! key, wrong type, impossible value) is reported at its own line and column.
//!
//! Each section has its own function taking a [`Tbl`]; a multi-container spec can reuse
//! [`container`] once per `[containers.NAME]` table.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::diag::Diagnostic;
use super::types::*;
use super::units::{
    parse_duration, parse_signal, parse_size, rlimit_resources, signal_names, CAPABILITIES,
};

type Span = Range<usize>;
type Val<'i> = Spanned<DeValue<'i>>;

const TOP_KEYS: &[&str] = &[
    "name",
    "hostname",
    "rootfs",
    "process",
    "namespaces",
    "resources",
    "security",
    "mounts",
    "lifecycle",
];
const ROOTFS_KEYS: &[&str] = &["layers", "upper", "readonly"];
const HOST_LAYER_KEYS: &[&str] = &["host"];
const PROCESS_KEYS: &[&str] = &[
    "command",
    "entrypoint",
    "env",
    "workdir",
    "user",
    "umask",
    "rlimits",
];
const NS_KEYS: &[&str] = &["network", "pid", "ipc", "uts", "cgroup"];
const RES_KEYS: &[&str] = &["memory", "cpus", "pids", "cpuset", "io_weight"];
const SEC_KEYS: &[&str] = &["cap_add", "cap_drop", "no_new_privileges", "seccomp"];
const MOUNT_KEYS: &[&str] = &["type", "source", "target", "readonly", "size"];
const LIFE_KEYS: &[&str] = &["init", "stop_signal", "stop_timeout"];
/// Keys only [`parse_project`] understands.
const PROJECT_KEYS: &[&str] = &["depends_on", "healthcheck"];
/// Keys of a `[containers.NAME]` table (`name` is the table key).
const CONTAINER_KEYS: &[&str] = &[
    "hostname",
    "rootfs",
    "process",
    "namespaces",
    "resources",
    "security",
    "mounts",
    "lifecycle",
    "depends_on",
    "healthcheck",
];
const HEALTH_KEYS: &[&str] = &["command", "interval", "timeout", "retries", "start_period"];

/// Smallest memory limit accepted: below this nothing can even start.
const MIN_MEMORY: u64 = 1 << 20;

/// Collects problems while walking.
struct Cx<'s> {
    src: &'s str,
    /// The spec file's directory (absolute): base of relative paths.
    dir: PathBuf,
    errors: Vec<Diagnostic>,
}

impl Cx<'_> {
    fn err(&mut self, span: Span, msg: impl Into<String>) {
        self.errors
            .push(Diagnostic::new(self.src, Some(span), msg.into(), None));
    }

    fn err_help(&mut self, span: Span, msg: impl Into<String>, help: impl Into<String>) {
        self.errors.push(Diagnostic::new(
            self.src,
            Some(span),
            msg.into(),
            Some(help.into()),
        ));
    }

    fn err_at(&mut self, span: Option<Span>, msg: impl Into<String>, help: Option<String>) {
        self.errors
            .push(Diagnostic::new(self.src, span, msg.into(), help));
    }
}

/// A table being read: unknown keys are reported when it is opened.
struct Tbl<'a, 'i> {
    /// How messages name it: `[process]`, `[[mounts]] #2`...
    what: String,
    /// Where it is (its header for a `[section]`); `None` for the document itself.
    span: Option<Span>,
    map: &'a DeTable<'i>,
}

impl<'a, 'i> Tbl<'a, 'i> {
    fn get(&self, key: &str) -> Option<&'a Val<'i>> {
        self.map
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v)
    }

    /// Entries in file order.
    fn entries(&self) -> Vec<(&'a Spanned<std::borrow::Cow<'i, str>>, &'a Val<'i>)> {
        let mut v: Vec<_> = self.map.iter().collect();
        v.sort_by_key(|(k, _)| k.span().start);
        v
    }
}

/// Opens `v` as a table named `what`, reporting a wrong type or keys not in `known` (an empty
/// `known` accepts any key).
fn open<'a, 'i>(cx: &mut Cx, v: &'a Val<'i>, what: &str, known: &[&str]) -> Option<Tbl<'a, 'i>> {
    let Some(map) = v.get_ref().as_table() else {
        cx.err(
            v.span(),
            format!("{what} must be a table, found {}", describe(v)),
        );
        return None;
    };
    let t = Tbl {
        what: what.to_string(),
        span: Some(v.span()),
        map,
    };
    if !known.is_empty() {
        check_keys(cx, &t, known);
    }
    Some(t)
}

fn check_keys(cx: &mut Cx, t: &Tbl, known: &[&str]) {
    for (k, _) in t.entries() {
        let name: &str = k.get_ref();
        if known.contains(&name) {
            continue;
        }
        let help = match suggest(name, known) {
            Some(s) => format!("did you mean \"{s}\"?"),
            None if matches!(name, "depends_on" | "healthcheck" | "restart") => format!(
                "\"{name}\" belongs to multi-container specs, which this command does not support yet"
            ),
            None if t.span.is_some() && TOP_KEYS.contains(&name) => {
                format!("\"{name}\" is a top-level key: move it above the first [table] header")
            }
            None => format!("{} accepts: {}", t.what, known.join(", ")),
        };
        cx.err_help(
            k.span(),
            format!("unknown key \"{name}\" in {}", t.what),
            help,
        );
    }
}

/// The candidate closest to `word` by edit distance, if close enough to be a likely typo.
pub(crate) fn suggest<'k>(word: &str, candidates: &[&'k str]) -> Option<&'k str> {
    let w = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&w, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| {
            let limit = match c.len() {
                0..=3 => 1,
                4..=6 => 2,
                _ => 3,
            };
            *d <= limit
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// "a string (\"lots\")", "an integer (-1)", ... for "found ..." messages.
fn describe(v: &Val) -> String {
    match v.get_ref() {
        DeValue::String(s) => format!("the string \"{s}\""),
        DeValue::Integer(i) => format!("the integer {i}"),
        DeValue::Float(f) => format!("the float {f}"),
        DeValue::Boolean(b) => format!("the boolean {b}"),
        DeValue::Datetime(_) => "a date-time".into(),
        DeValue::Array(_) => "an array".into(),
        DeValue::Table(_) => "a table".into(),
    }
}

fn want_str<'a>(cx: &mut Cx, v: &'a Val, what: &str, expected: &str) -> Option<&'a str> {
    match v.get_ref() {
        DeValue::String(s) => Some(s.as_ref()),
        _ => {
            cx.err(
                v.span(),
                format!("{what} must be {expected}, found {}", describe(v)),
            );
            None
        }
    }
}

fn want_bool(cx: &mut Cx, v: &Val, what: &str) -> Option<bool> {
    match v.get_ref() {
        DeValue::Boolean(b) => Some(*b),
        _ => {
            cx.err(
                v.span(),
                format!("{what} must be true or false, found {}", describe(v)),
            );
            None
        }
    }
}

/// The integer value of `v`, if it is an integer that fits in i64.
fn int_of(v: &Val) -> Option<Result<i64, ()>> {
    match v.get_ref() {
        DeValue::Integer(i) => Some(i64::from_str_radix(i.as_str(), i.radix()).map_err(|_| ())),
        _ => None,
    }
}

fn want_int(cx: &mut Cx, v: &Val, what: &str, expected: &str) -> Option<i64> {
    match int_of(v) {
        Some(Ok(n)) => Some(n),
        Some(Err(())) => {
            cx.err(v.span(), format!("{what} is too large"));
            None
        }
        None => {
            cx.err(
                v.span(),
                format!("{what} must be {expected}, found {}", describe(v)),
            );
            None
        }
    }
}

/// An array of strings (each with its span).
fn want_str_array<'a>(cx: &mut Cx, v: &'a Val, what: &str) -> Option<Vec<(&'a str, Span)>> {
    let Some(arr) = v.get_ref().as_array() else {
        cx.err(
            v.span(),
            format!("{what} must be an array of strings, found {}", describe(v)),
        );
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for item in arr.iter() {
        match item.get_ref() {
            DeValue::String(s) => out.push((s.as_ref(), item.span())),
            _ => {
                cx.err(
                    item.span(),
                    format!("{what} must contain only strings, found {}", describe(item)),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// `path` made absolute against `base` and cleaned of `.` and `..` (lexically).
fn resolve(base: &Path, path: &str) -> PathBuf {
    normalize(&base.join(path))
}

/// Lexical clean-up of an absolute path: drops `.`, applies `..`, never above `/`.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Parses the TOML; a syntax error is the only problem reported.
fn parse_doc<'i>(src: &'i str) -> Result<Spanned<DeTable<'i>>, Vec<Diagnostic>> {
    DeTable::parse(src).map_err(|e| {
        let mut msg = e.message().trim().replace('\n', "; ");
        if let Some(key) = e.span().and_then(|s| src.get(s)) {
            if msg == "duplicate key" {
                msg = format!(
                    "duplicate key {}: each key may be set only once",
                    key.trim()
                );
            }
        }
        vec![Diagnostic::new(src, e.span(), msg, None)]
    })
}

/// The spec's absolute, normalized path and its file stem.
fn locate(path: &Path) -> (PathBuf, String) {
    let abs = normalize(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
    let stem = abs
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    (abs, stem)
}

fn new_cx<'s>(src: &'s str, abs: &Path) -> Cx<'s> {
    Cx {
        src,
        dir: abs
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
        errors: Vec::new(),
    }
}

fn key_span(t: &Tbl, key: &str) -> Option<Span> {
    t.map
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(k, _)| k.span())
}

/// Parses and validates a single-container spec; all problems found, in file order, on failure.
pub(crate) fn parse(path: &Path, src: &str) -> Result<Spec, Vec<Diagnostic>> {
    let doc = parse_doc(src)?;
    let (abs, stem) = locate(path);
    let mut cx = new_cx(src, &abs);
    let top = Tbl {
        what: "the spec".into(),
        span: None,
        map: doc.get_ref(),
    };
    if let Some(span) = key_span(&top, "containers") {
        cx.err_help(
            span,
            "multi-container specs ([containers.NAME]) are not supported by this command yet",
            "write one spec file per container",
        );
    }
    let (spec, _) = container(&mut cx, &top, (stem, None), abs, Mode::Single);
    if cx.errors.is_empty() {
        Ok(spec)
    } else {
        Err(cx.errors)
    }
}

/// Parses and validates a spec that may hold `[containers.NAME]` tables.
pub(crate) fn parse_project(path: &Path, src: &str) -> Result<Project, Vec<Diagnostic>> {
    let doc = parse_doc(src)?;
    let (abs, stem) = locate(path);
    let mut cx = new_cx(src, &abs);
    let top = Tbl {
        what: "the spec".into(),
        span: None,
        map: doc.get_ref(),
    };
    let mut members: Vec<(Container, Vec<Span>, Span)> = Vec::new();
    match top.get("containers") {
        None => {
            let (spec, extras) = container(&mut cx, &top, (stem, None), abs.clone(), Mode::Alone);
            members.push((extras.into_container(spec), Vec::new(), 0..0));
        }
        Some(v) => {
            for (k, _) in top.entries() {
                let key: &str = k.get_ref();
                if key != "containers" {
                    cx.err_help(
                        k.span(),
                        format!("\"{key}\" cannot sit beside [containers.NAME] tables"),
                        "move it into each [containers.NAME] table that needs it",
                    );
                }
            }
            if let Some(all) = open(&mut cx, v, "[containers]", &[]) {
                if all.map.is_empty() {
                    cx.err(
                        v.span(),
                        "[containers] is empty: add a [containers.NAME] table",
                    );
                }
                for (k, cv) in all.entries() {
                    let name: &str = k.get_ref();
                    let what = format!("[containers.{name}]");
                    let Some(t) = open(&mut cx, cv, &what, &with(CONTAINER_KEYS, &["name"])) else {
                        continue;
                    };
                    if let Some(span) = key_span(&t, "name") {
                        cx.err_help(
                            span,
                            format!("{what} cannot set `name`: the table key is the name"),
                            "rename the table instead, e.g. [containers.web]",
                        );
                    }
                    let (spec, extras) = container(
                        &mut cx,
                        &t,
                        (name.to_string(), Some(k.span())),
                        abs.clone(),
                        Mode::Member,
                    );
                    let spans = extras.dep_spans.clone();
                    members.push((extras.into_container(spec), spans, k.span()));
                }
            }
        }
    }
    let containers = order(&mut cx, members);
    if cx.errors.is_empty() {
        Ok(Project {
            source: abs,
            containers,
        })
    } else {
        Err(cx.errors)
    }
}

/// Checks `depends_on` (known names, no self or cycles, `healthy` needs a healthcheck) and
/// returns the containers in start order (file order where free).
fn order(cx: &mut Cx, members: Vec<(Container, Vec<Span>, Span)>) -> Vec<Container> {
    let names: Vec<String> = members
        .iter()
        .map(|(c, _, _)| c.spec.name.clone())
        .collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut ok = true;
    for (c, spans, _) in &members {
        for (d, span) in c.depends_on.iter().zip(spans) {
            if d.name == c.spec.name {
                cx.err(span.clone(), format!("{} cannot depend on itself", d.name));
                ok = false;
                continue;
            }
            let Some(target) = members.iter().find(|(m, _, _)| m.spec.name == d.name) else {
                let help = match suggest(&d.name, &name_refs) {
                    Some(s) => format!("did you mean \"{s}\"?"),
                    None => format!("containers here: {}", name_refs.join(", ")),
                };
                cx.err_help(
                    span.clone(),
                    format!("no container named \"{}\"", d.name),
                    help,
                );
                ok = false;
                continue;
            };
            if d.condition == Condition::Healthy && target.0.healthcheck.is_none() {
                cx.err_help(
                    span.clone(),
                    format!(
                        "{} waits for {} to be healthy, but {} has no [healthcheck]",
                        c.spec.name, d.name, d.name
                    ),
                    format!(
                        "add [containers.{}.healthcheck], or wait for \"started\"",
                        d.name
                    ),
                );
                ok = false;
            }
        }
    }
    if !ok {
        return members.into_iter().map(|(c, _, _)| c).collect();
    }
    // Kahn's algorithm, always taking the first ready container in file order.
    let n = members.len();
    let mut placed = vec![false; n];
    let mut out_idx = Vec::with_capacity(n);
    while out_idx.len() < n {
        let next = (0..n).find(|&i| {
            !placed[i]
                && members[i].0.depends_on.iter().all(|d| {
                    members
                        .iter()
                        .position(|(m, _, _)| m.spec.name == d.name)
                        .is_some_and(|j| placed[j])
                })
        });
        match next {
            Some(i) => {
                placed[i] = true;
                out_idx.push(i);
            }
            None => {
                // Every container left waits on another one left: name one cycle.
                let start = (0..n).find(|&i| !placed[i]).expect("some left");
                let mut path = vec![start];
                let mut cur = start;
                loop {
                    let dep = members[cur]
                        .0
                        .depends_on
                        .iter()
                        .filter_map(|d| members.iter().position(|(m, _, _)| m.spec.name == d.name))
                        .find(|&j| !placed[j])
                        .expect("a blocked container waits on another blocked one");
                    if let Some(pos) = path.iter().position(|&p| p == dep) {
                        let cycle: Vec<&str> = path[pos..]
                            .iter()
                            .chain(std::iter::once(&dep))
                            .map(|&i| names[i].as_str())
                            .collect();
                        let (c, spans, _) = &members[cur];
                        let span = c
                            .depends_on
                            .iter()
                            .zip(spans)
                            .find(|(d, _)| d.name == names[dep])
                            .map(|(_, s)| s.clone());
                        cx.err_at(
                            span,
                            format!("dependency cycle: {}", cycle.join(" -> ")),
                            Some("remove one of these depends_on entries".into()),
                        );
                        break;
                    }
                    path.push(dep);
                    cur = dep;
                }
                return members.into_iter().map(|(c, _, _)| c).collect();
            }
        }
    }
    let mut slots: Vec<Option<Container>> = members.into_iter().map(|(c, _, _)| Some(c)).collect();
    out_idx
        .into_iter()
        .map(|i| slots[i].take().expect("each index once"))
        .collect()
}

/// Which keys a container table may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// [`parse`]: one container, no project-only keys.
    Single,
    /// [`parse_project`] on a file without `[containers]`.
    Alone,
    /// A `[containers.NAME]` table.
    Member,
}

/// Project-only settings of one container, with the spans of its `depends_on` entries.
#[derive(Default)]
struct Extras {
    depends_on: Vec<Dependency>,
    dep_spans: Vec<Span>,
    restart: Restart,
    healthcheck: Option<Healthcheck>,
}

impl Extras {
    fn into_container(self, spec: Spec) -> Container {
        Container {
            spec,
            depends_on: self.depends_on,
            restart: self.restart,
            healthcheck: self.healthcheck,
        }
    }
}

/// One container's settings from table `t` (the document, or a `[containers.NAME]` table).
/// `given` is the default name (the file stem) or, with a span, the table key naming it.
fn container(
    cx: &mut Cx,
    t: &Tbl,
    given: (String, Option<Span>),
    source: PathBuf,
    mode: Mode,
) -> (Spec, Extras) {
    let mut extras = Extras::default();
    match mode {
        Mode::Single => check_keys(cx, t, &with(TOP_KEYS, &["containers"])),
        Mode::Alone => check_keys(cx, t, &with(TOP_KEYS, PROJECT_KEYS)),
        Mode::Member => {} // Checked by the caller against CONTAINER_KEYS.
    }
    let default_name = given.0.as_str();
    let name = match (mode, t.get("name")) {
        (Mode::Member, _) => Some((given.0.clone(), given.1.clone())),
        (_, Some(v)) => {
            want_str(cx, v, "`name`", "a string").map(|s| (s.to_string(), Some(v.span())))
        }
        (_, None) => Some((default_name.to_string(), None)),
    };
    let name = match name {
        Some((n, span)) => {
            if let Err(why) = check_name(&n) {
                let help = span
                    .is_none()
                    .then(|| "set `name = \"...\"` at the top of the spec".to_string());
                let what = if span.is_some() {
                    format!("invalid container name \"{n}\": {why}")
                } else {
                    format!(
                        "the file name gives the container name \"{n}\", which is invalid: {why}"
                    )
                };
                cx.err_at(span, what, help);
            }
            n
        }
        None => default_name.to_string(),
    };

    let hostname_v = t.get("hostname");
    let hostname = match hostname_v {
        Some(v) => match want_str(cx, v, "`hostname`", "a string") {
            Some(h) => {
                if let Err(why) = check_hostname(h) {
                    cx.err(v.span(), format!("invalid hostname \"{h}\": {why}"));
                }
                h.to_string()
            }
            None => name.clone(),
        },
        None => name.clone(),
    };

    let rootfs = match t.get("rootfs") {
        Some(v) => open(cx, v, "[rootfs]", ROOTFS_KEYS).map(|r| rootfs(cx, &r)),
        None => {
            cx.err_at(
                None,
                "the spec has no [rootfs] table",
                Some("add [rootfs] with `layers = [\"path/to/dir\"]` or `layers = [{ host = [\"/bin/sh\"] }]`".into()),
            );
            None
        }
    }
    .unwrap_or(Rootfs {
        layers: Vec::new(),
        upper: None,
        readonly: false,
    });

    let process = match t.get("process") {
        Some(v) => open(cx, v, "[process]", PROCESS_KEYS).map(|p| process(cx, &p)),
        None => {
            cx.err_at(
                None,
                "the spec has no [process] table",
                Some("add [process] with `command = [\"/bin/sh\", \"-c\", \"echo hi\"]`".into()),
            );
            None
        }
    }
    .unwrap_or_default();

    let namespaces = t
        .get("namespaces")
        .and_then(|v| open(cx, v, "[namespaces]", NS_KEYS))
        .map(|n| namespaces(cx, &n))
        .unwrap_or_default();
    if namespaces.uts == NsMode::Host {
        if let Some(v) = hostname_v {
            cx.err_help(
                v.span(),
                "cannot set a hostname while sharing the host's UTS namespace (uts = \"host\")",
                "remove `hostname` or set uts = \"new\"",
            );
        }
    }

    let resources = t
        .get("resources")
        .and_then(|v| open(cx, v, "[resources]", RES_KEYS))
        .map(|r| resources(cx, &r))
        .unwrap_or_default();
    let security = t
        .get("security")
        .and_then(|v| open(cx, v, "[security]", SEC_KEYS))
        .map(|s| security(cx, &s))
        .unwrap_or_default();
    let mounts = t.get("mounts").map(|v| mounts(cx, v)).unwrap_or_default();
    let life_keys = if mode == Mode::Single {
        LIFE_KEYS.to_vec()
    } else {
        with(LIFE_KEYS, &["restart"])
    };
    let (lifecycle, restart) = t
        .get("lifecycle")
        .and_then(|v| open(cx, v, "[lifecycle]", &life_keys))
        .map(|l| lifecycle(cx, &l))
        .unwrap_or_default();
    extras.restart = restart;
    if mode != Mode::Single {
        if let Some(v) = t.get("healthcheck") {
            if let Some(h) = open(cx, v, "[healthcheck]", HEALTH_KEYS) {
                extras.healthcheck = healthcheck(cx, &h);
            }
        }
        if let Some(v) = t.get("depends_on") {
            if mode == Mode::Alone {
                cx.err_help(
                    key_span(t, "depends_on").unwrap_or(v.span()),
                    "`depends_on` needs several containers",
                    "declare them as [containers.NAME] tables in one file",
                );
            } else {
                for (d, span) in depends_on(cx, v) {
                    extras.depends_on.push(d);
                    extras.dep_spans.push(span);
                }
            }
        }
    }

    let spec = Spec {
        source,
        name,
        hostname,
        rootfs,
        process,
        namespaces,
        resources,
        security,
        mounts,
        lifecycle,
    };
    (spec, extras)
}

/// `base` plus `more`.
fn with<'k>(base: &[&'k str], more: &[&'k str]) -> Vec<&'k str> {
    base.iter().chain(more).copied().collect()
}

/// `depends_on = ["db"]` or `depends_on = { db = "healthy", setup = "completed" }`.
fn depends_on(cx: &mut Cx, v: &Val) -> Vec<(Dependency, Span)> {
    let mut out: Vec<(Dependency, Span)> = Vec::new();
    match v.get_ref() {
        DeValue::Array(_) => {
            for (name, span) in want_str_array(cx, v, "`depends_on`").unwrap_or_default() {
                out.push((
                    Dependency {
                        name: name.to_string(),
                        condition: Condition::Started,
                    },
                    span,
                ));
            }
        }
        DeValue::Table(_) => {
            let Some(t) = open(cx, v, "`depends_on`", &[]) else {
                return out;
            };
            for (k, cv) in t.entries() {
                let Some(c) = want_str(cx, cv, "a dependency condition", "\"started\", \"healthy\" or \"completed\"") else {
                    continue;
                };
                let condition = match c {
                    "started" => Condition::Started,
                    "healthy" => Condition::Healthy,
                    "completed" => Condition::Completed,
                    other => {
                        cx.err(
                            cv.span(),
                            format!("unknown condition \"{other}\", expected \"started\", \"healthy\" or \"completed\""),
                        );
                        continue;
                    }
                };
                out.push((
                    Dependency {
                        name: k.get_ref().to_string(),
                        condition,
                    },
                    k.span(),
                ));
            }
        }
        _ => cx.err(
            v.span(),
            format!(
                "`depends_on` must be an array of container names or a table of conditions, found {}",
                describe(v)
            ),
        ),
    }
    let mut seen = Vec::new();
    out.retain(|(d, span)| {
        if seen.contains(&d.name) {
            cx.err(
                span.clone(),
                format!("{} is listed twice in `depends_on`", d.name),
            );
            false
        } else {
            seen.push(d.name.clone());
            true
        }
    });
    out
}

fn healthcheck(cx: &mut Cx, t: &Tbl) -> Option<Healthcheck> {
    let command = match t.get("command") {
        Some(v) => command_form(cx, v, "the healthcheck `command`", false).map(|(a, _)| a),
        None => {
            cx.err_help(
                t.span.clone().unwrap_or_default(),
                "[healthcheck] needs a `command`: it exits 0 when the container is healthy",
                "e.g. command = \"wget -q -O /dev/null http://localhost/\"",
            );
            None
        }
    };
    let mut dur = |key: &str, default: u64| -> Duration {
        let Some(v) = t.get(key) else {
            return Duration::from_secs(default);
        };
        match duration_value(cx, v, key) {
            Some(d) if d.is_zero() && key != "start_period" => {
                cx.err(v.span(), format!("`{key}` must be longer than 0"));
                Duration::from_secs(default)
            }
            Some(d) => d,
            None => Duration::from_secs(default),
        }
    };
    let interval = dur("interval", 30);
    let timeout = dur("timeout", 30);
    let start_period = dur("start_period", 0);
    let retries = match t.get("retries") {
        None => 3,
        Some(v) => match want_int(cx, v, "`retries`", "a whole number") {
            Some(n) if (1..=i64::from(u32::MAX)).contains(&n) => n as u32,
            Some(n) => {
                cx.err(
                    v.span(),
                    format!("`retries` = {n} is impossible: it must be at least 1"),
                );
                3
            }
            None => 3,
        },
    };
    Some(Healthcheck {
        command: command?,
        interval,
        timeout,
        retries,
        start_period,
    })
}

/// A duration: a string such as "10s" or a number of seconds.
fn duration_value(cx: &mut Cx, v: &Val, key: &str) -> Option<Duration> {
    let parsed = match v.get_ref() {
        DeValue::String(s) => parse_duration(s),
        DeValue::Integer(i) => parse_duration(i.as_str()),
        DeValue::Float(f) => parse_duration(f.as_str()),
        _ => Err(format!("found {}", describe(v))),
    };
    match parsed {
        Ok(d) => Some(d),
        Err(why) => {
            cx.err_help(
                v.span(),
                format!("invalid `{key}`: {why}"),
                "write a duration such as \"500ms\", \"10s\", \"2m\", or a number of seconds",
            );
            None
        }
    }
}

fn check_name(n: &str) -> Result<(), &'static str> {
    if n.is_empty() {
        return Err("it is empty");
    }
    if n.len() > 64 {
        return Err("it is longer than 64 characters");
    }
    if !n.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("it must start with a letter or digit");
    }
    if !n
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err("only letters, digits, '_', '.' and '-' are allowed");
    }
    Ok(())
}

fn check_hostname(h: &str) -> Result<(), &'static str> {
    if h.is_empty() {
        return Err("it is empty");
    }
    if h.len() > 64 {
        return Err("it is longer than 64 bytes");
    }
    if !h
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err("only letters, digits, '-', '.' and '_' are allowed");
    }
    Ok(())
}

fn rootfs(cx: &mut Cx, t: &Tbl) -> Rootfs {
    let mut layers = Vec::new();
    match t.get("layers") {
        None => cx.err_at(
            t.span.clone(),
            "[rootfs] needs `layers`: the layer directories, top first",
            Some("e.g. layers = [\"layers/app\", { host = [\"/bin/sh\"] }]".into()),
        ),
        Some(v) => match v.get_ref().as_array() {
            None => cx.err(
                v.span(),
                format!(
                    "`layers` must be an array of directories or {{ host = [...] }} tables, found {}",
                    describe(v)
                ),
            ),
            Some(arr) if arr.is_empty() => cx.err(v.span(), "`layers` is empty: a rootfs needs at least one layer"),
            Some(arr) => {
                for item in arr.iter() {
                    if let Some(l) = layer(cx, item) {
                        layers.push(l);
                    }
                }
            }
        },
    }
    let readonly = t
        .get("readonly")
        .and_then(|v| want_bool(cx, v, "`readonly`"))
        .unwrap_or(false);
    let upper = match t.get("upper") {
        None => None,
        Some(v) => want_str(cx, v, "`upper`", "a directory path").and_then(|s| {
            if s.is_empty() {
                cx.err(v.span(), "`upper` is empty");
                return None;
            }
            let p = resolve(&cx.dir, s);
            if p.exists() && !p.is_dir() {
                cx.err(
                    v.span(),
                    format!("upper layer {} exists but is not a directory", p.display()),
                );
            }
            if readonly {
                cx.err_help(
                    v.span(),
                    "a readonly rootfs has no upper layer",
                    "remove `upper`, or set readonly = false",
                );
            }
            Some(p)
        }),
    };
    Rootfs {
        layers,
        upper,
        readonly,
    }
}

fn layer(cx: &mut Cx, item: &Val) -> Option<Layer> {
    match item.get_ref() {
        DeValue::String(s) => {
            if s.is_empty() {
                cx.err(item.span(), "a layer path is empty");
                return None;
            }
            let p = resolve(&cx.dir, s);
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => Some(Layer::Dir(p)),
                Ok(_) => {
                    cx.err(
                        item.span(),
                        format!("layer {} is not a directory", p.display()),
                    );
                    None
                }
                Err(e) => {
                    cx.err_help(
                        item.span(),
                        format!("layer directory {} cannot be used: {e}", p.display()),
                        "layer paths are relative to the spec file's directory",
                    );
                    None
                }
            }
        }
        DeValue::Table(_) => {
            let before = cx.errors.len();
            let t = open(cx, item, "a host layer", HOST_LAYER_KEYS)?;
            let Some(v) = t.get("host") else {
                if cx.errors.len() > before {
                    return None; // A misspelt `host` was already reported.
                }
                cx.err_help(
                    item.span(),
                    "a layer table needs `host`: the host programs to copy",
                    "e.g. { host = [\"/bin/sh\", \"/usr/bin/env\"] }",
                );
                return None;
            };
            let names = want_str_array(cx, v, "`host`")?;
            if names.is_empty() {
                cx.err(v.span(), "`host` is empty: name at least one program");
                return None;
            }
            let mut progs = Vec::new();
            for (name, span) in names {
                match host_program(&cx.dir, name) {
                    Ok(p) => progs.push(p),
                    Err(why) => cx.err(span, why),
                }
            }
            Some(Layer::Host(progs))
        }
        _ => {
            cx.err(
                item.span(),
                format!(
                    "a layer must be a directory path or {{ host = [...] }}, found {}",
                    describe(item)
                ),
            );
            None
        }
    }
}

/// Resolves a host program: an absolute path, a path relative to the spec, or a bare name found
/// in the host's PATH. Must be an executable regular file.
fn host_program(dir: &Path, name: &str) -> Result<PathBuf, String> {
    if name.is_empty() {
        return Err("a host program name is empty".into());
    }
    let path = if name.contains('/') {
        resolve(dir, name)
    } else {
        let search = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string());
        search
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| Path::new(d).join(name))
            .find(|p| is_executable(p))
            .ok_or_else(|| format!("host program \"{name}\" is not found in PATH"))?
    };
    match std::fs::metadata(&path) {
        Err(e) => Err(format!(
            "host program {} cannot be used: {e}",
            path.display()
        )),
        Ok(m) if !m.is_file() => Err(format!(
            "host program {} is not a regular file",
            path.display()
        )),
        Ok(_) if !is_executable(&path) => {
            Err(format!("host program {} is not executable", path.display()))
        }
        Ok(_) => Ok(path),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `command`/`entrypoint`: exec form (array) or shell form (string). Returns (args, shell form).
fn command_form(
    cx: &mut Cx,
    v: &Val,
    what: &str,
    allow_empty: bool,
) -> Option<(Vec<String>, bool)> {
    match v.get_ref() {
        DeValue::String(s) => {
            if s.trim().is_empty() {
                cx.err(v.span(), format!("{what} is empty: nothing to run"));
                return None;
            }
            Some((vec!["/bin/sh".into(), "-c".into(), s.to_string()], true))
        }
        DeValue::Array(_) => {
            let items = want_str_array(cx, v, what)?;
            if items.is_empty() && !allow_empty {
                cx.err_help(
                    v.span(),
                    format!("{what} is empty: nothing to run"),
                    "give the program and its arguments, e.g. [\"/bin/sh\", \"-c\", \"echo hi\"]",
                );
                return None;
            }
            if let Some((first, span)) = items.first() {
                if first.is_empty() {
                    cx.err(
                        span.clone(),
                        format!("the program in {what} is an empty string"),
                    );
                    return None;
                }
            }
            Some((
                items.into_iter().map(|(s, _)| s.to_string()).collect(),
                false,
            ))
        }
        _ => {
            cx.err(
                v.span(),
                format!(
                    "{what} must be an array of strings (exec form) or a string (shell form), found {}",
                    describe(v)
                ),
            );
            None
        }
    }
}

fn process(cx: &mut Cx, t: &Tbl) -> Process {
    let mut p = Process::default();
    let entry = t
        .get("entrypoint")
        .map(|v| (v, command_form(cx, v, "`entrypoint`", true)));
    let cmd = t
        .get("command")
        .map(|v| (v, command_form(cx, v, "`command`", false)));
    let mut failed = matches!(entry, Some((_, None))) || matches!(cmd, Some((_, None)));
    if let (Some((_, Some((_, true)))), Some((cv, Some(_)))) = (&entry, &cmd) {
        cx.err_help(
            cv.span(),
            "a shell-form `entrypoint` (a string) cannot take a `command`",
            "write `entrypoint` as an array, e.g. [\"/bin/sh\", \"-c\", \"...\", \"sh\"]",
        );
        failed = true;
    }
    let entry_span = entry.as_ref().map(|(v, _)| v.span());
    let mut args = Vec::new();
    if let Some((_, Some((a, _)))) = entry {
        args.extend(a);
    }
    if let Some((_, Some((a, _)))) = cmd {
        args.extend(a);
    }
    if args.is_empty() && !failed {
        let span = entry_span.or(t.span.clone());
        cx.err_at(
            span,
            "[process] needs a `command` (or a non-empty `entrypoint`)",
            Some("e.g. command = [\"/bin/sh\", \"-c\", \"echo hi\"]".into()),
        );
    }
    p.args = args;

    if let Some(v) = t.get("env") {
        if let Some(env) = open(cx, v, "[process] env", &[]).map(|e| env_table(cx, &e)) {
            p.env = env;
        }
    } else {
        p.env = Vec::new();
    }
    if !p.env.iter().any(|(k, _)| k == "PATH") {
        p.env.push(("PATH".into(), DEFAULT_PATH.into()));
    }

    if let Some(v) = t.get("workdir") {
        if let Some(w) = want_str(cx, v, "`workdir`", "an absolute path") {
            if w.starts_with('/') {
                p.workdir = normalize(Path::new(w));
            } else {
                cx.err_help(
                    v.span(),
                    format!(
                        "`workdir` must be an absolute path inside the container, found \"{w}\""
                    ),
                    format!("write \"/{}\"", w.trim_start_matches("./")),
                );
            }
        }
    }
    if let Some(v) = t.get("user") {
        if let Some(u) = user(cx, v) {
            p.user = u;
        }
    }
    if let Some(v) = t.get("umask") {
        if let Some(m) = umask(cx, v) {
            p.umask = m;
        }
    }
    if let Some(v) = t.get("rlimits") {
        if let Some(rt) = open(cx, v, "[process] rlimits", &[]) {
            p.rlimits = rlimits(cx, &rt);
        }
    }
    p
}

fn env_table(cx: &mut Cx, t: &Tbl) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in t.entries() {
        let key: &str = k.get_ref();
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            cx.err(
                k.span(),
                format!("invalid environment variable name \"{key}\": it must be non-empty and contain no '='"),
            );
            continue;
        }
        let val = match v.get_ref() {
            DeValue::String(s) => s.to_string(),
            DeValue::Integer(i) => i.to_string(),
            DeValue::Float(f) => f.to_string(),
            DeValue::Boolean(b) => b.to_string(),
            _ => {
                cx.err(
                    v.span(),
                    format!(
                        "environment variable {key} must be a string, found {}",
                        describe(v)
                    ),
                );
                continue;
            }
        };
        if val.contains('\0') {
            cx.err(
                v.span(),
                format!("environment variable {key} contains a NUL byte"),
            );
            continue;
        }
        out.push((key.to_string(), val));
    }
    out
}

fn user(cx: &mut Cx, v: &Val) -> Option<User> {
    if let Some(n) = int_of(v) {
        return match n {
            Ok(n) if (0..u32::MAX as i64).contains(&n) => Some(User::Ids {
                uid: n as u32,
                gid: None,
            }),
            _ => {
                cx.err(v.span(), "`user` must be a uid from 0 to 4294967294");
                None
            }
        };
    }
    let s = want_str(cx, v, "`user`", "\"uid[:gid]\" or \"name[:group]\"")?;
    match parse_user(s) {
        Ok(u) => Some(u),
        Err(why) => {
            cx.err_help(
                v.span(),
                format!("invalid `user` \"{s}\": {why}"),
                "write \"uid:gid\" (numbers, e.g. \"1000:1000\") or \"name[:group]\" (e.g. \"nobody\")",
            );
            None
        }
    }
}

fn parse_user(s: &str) -> Result<User, String> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    if u.is_empty() {
        return Err("the user part is empty".into());
    }
    if g == Some("") {
        return Err("the group part after ':' is empty".into());
    }
    if g.is_some_and(|g| g.contains(':')) {
        return Err("too many ':'".into());
    }
    let num = |x: &str| -> Result<Option<u32>, String> {
        if x.chars().all(|c| c.is_ascii_digit()) {
            match x.parse::<u32>() {
                Ok(n) if n != u32::MAX => Ok(Some(n)),
                _ => Err(format!("id {x} is out of range (0..4294967294)")),
            }
        } else {
            Ok(None)
        }
    };
    let name_ok = |x: &str| {
        !x.starts_with('-')
            && x.trim_end_matches('$')
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    match num(u)? {
        Some(uid) => {
            let gid = match g {
                None => None,
                Some(g) => match num(g)? {
                    Some(gid) => Some(gid),
                    None => {
                        return Err(format!(
                            "a numeric uid needs a numeric gid, found group name \"{g}\""
                        ))
                    }
                },
            };
            Ok(User::Ids { uid, gid })
        }
        None => {
            if !name_ok(u) {
                return Err(format!("\"{u}\" is not a valid user name"));
            }
            if let Some(g) = g {
                if num(g)?.is_none() && !name_ok(g) {
                    return Err(format!("\"{g}\" is not a valid group name"));
                }
            }
            Ok(User::Name {
                user: u.to_string(),
                group: g.map(str::to_string),
            })
        }
    }
}

fn umask(cx: &mut Cx, v: &Val) -> Option<u32> {
    let help = "write the umask in octal: umask = \"0022\" or umask = 0o022";
    let value = match v.get_ref() {
        DeValue::Integer(i) if i.radix() == 8 => u32::from_str_radix(i.as_str(), 8).ok(),
        DeValue::Integer(i) if i.as_str().parse::<u32>().is_ok_and(|n| n <= 7) => {
            i.as_str().parse().ok()
        }
        DeValue::Integer(_) => {
            cx.err_help(v.span(), "a decimal `umask` is ambiguous", help);
            return None;
        }
        DeValue::String(s) => {
            let t = s.trim_start_matches("0o");
            if t.is_empty() {
                None
            } else {
                u32::from_str_radix(t, 8).ok()
            }
        }
        _ => {
            cx.err_help(
                v.span(),
                format!("`umask` must be an octal string, found {}", describe(v)),
                help,
            );
            return None;
        }
    };
    match value {
        Some(m) if m <= 0o777 => Some(m),
        _ => {
            cx.err_help(
                v.span(),
                "`umask` must be an octal number from 0 to 0777",
                help,
            );
            None
        }
    }
}

fn rlimits(cx: &mut Cx, t: &Tbl) -> Vec<Rlimit> {
    let known = rlimit_resources();
    let names: Vec<String> = known.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut out: Vec<Rlimit> = Vec::new();
    for (k, v) in t.entries() {
        let key: &str = k.get_ref();
        let upper = key.to_ascii_uppercase();
        let bare = upper.strip_prefix("RLIMIT_").unwrap_or(&upper);
        let Some((n, res)) = known.iter().find(|(n, _)| *n == bare) else {
            let help = match suggest(&bare.to_ascii_lowercase(), &name_refs) {
                Some(s) => format!("did you mean \"{s}\"?"),
                None => format!("known limits: {}", name_refs.join(", ")),
            };
            cx.err_help(k.span(), format!("unknown rlimit \"{key}\""), help);
            continue;
        };
        let one = |cx: &mut Cx, x: &Val| -> Option<u64> {
            match x.get_ref() {
                DeValue::String(s) if s.as_ref() == "unlimited" => Some(u64::MAX),
                DeValue::Integer(_) => match int_of(x) {
                    Some(Ok(n)) if n >= 0 => Some(n as u64),
                    _ => {
                        cx.err(
                            x.span(),
                            format!("rlimit {key} must be a number >= 0 or \"unlimited\""),
                        );
                        None
                    }
                },
                _ => {
                    cx.err(
                        x.span(),
                        format!(
                            "rlimit {key} must be a number, \"unlimited\", or [soft, hard], found {}",
                            describe(x)
                        ),
                    );
                    None
                }
            }
        };
        let (soft, hard) = match v.get_ref().as_array() {
            Some(arr) if arr.len() == 2 => {
                let s = one(cx, &arr[0]);
                let h = one(cx, &arr[1]);
                match (s, h) {
                    (Some(s), Some(h)) => (s, h),
                    _ => continue,
                }
            }
            Some(_) => {
                cx.err(
                    v.span(),
                    format!("rlimit {key} as an array must be [soft, hard]"),
                );
                continue;
            }
            None => match one(cx, v) {
                Some(n) => (n, n),
                None => continue,
            },
        };
        if soft > hard {
            cx.err(
                v.span(),
                format!("rlimit {key}: the soft limit is above the hard limit"),
            );
            continue;
        }
        let name = format!("RLIMIT_{n}");
        if out.iter().any(|r| r.name == name) {
            cx.err(k.span(), format!("{name} is set twice"));
            continue;
        }
        out.push(Rlimit {
            name,
            resource: *res,
            soft,
            hard,
        });
    }
    out
}

fn namespaces(cx: &mut Cx, t: &Tbl) -> Namespaces {
    let mut ns = Namespaces::default();
    if let Some(v) = t.get("network") {
        if let Some(s) = want_str(cx, v, "`network`", "\"none\" or \"host\"") {
            match s {
                "none" => ns.network = NsMode::New,
                "host" => ns.network = NsMode::Host,
                other => {
                    let help = if other == "new" || other == "private" {
                        "\"none\" gives the container its own network namespace with only loopback"
                            .to_string()
                    } else {
                        "choose \"none\" (own namespace, loopback only) or \"host\"".to_string()
                    };
                    cx.err_help(
                        v.span(),
                        format!("unknown network mode \"{other}\", expected \"none\" or \"host\""),
                        help,
                    );
                }
            }
        }
    }
    for (key, slot) in [
        ("pid", &mut ns.pid),
        ("ipc", &mut ns.ipc),
        ("uts", &mut ns.uts),
        ("cgroup", &mut ns.cgroup),
    ] {
        let Some(v) = t.get(key) else { continue };
        let what = format!("`{key}`");
        if let Some(s) = want_str(cx, v, &what, "\"new\" or \"host\"") {
            match s {
                "new" => *slot = NsMode::New,
                "host" => *slot = NsMode::Host,
                other => cx.err(
                    v.span(),
                    format!(
                        "unknown {key} namespace mode \"{other}\", expected \"new\" or \"host\""
                    ),
                ),
            }
        }
    }
    ns
}

fn resources(cx: &mut Cx, t: &Tbl) -> Resources {
    let mut r = Resources::default();
    if let Some(v) = t.get("memory") {
        r.memory = size_value(cx, v, "`memory`");
        if let Some(m) = r.memory {
            if m < MIN_MEMORY {
                cx.err(
                    v.span(),
                    format!("`memory` = {m} bytes is too small: the least is 1M (1048576 bytes)"),
                );
                r.memory = None;
            }
        }
    }
    if let Some(v) = t.get("cpus") {
        let n = match v.get_ref() {
            DeValue::Float(_) | DeValue::Integer(_) => v
                .get_ref()
                .as_float()
                .and_then(|f| f.as_str().parse::<f64>().ok())
                .or_else(|| int_of(v).and_then(Result::ok).map(|i| i as f64)),
            DeValue::String(s) => match s.trim().parse::<f64>() {
                Ok(f) => Some(f),
                Err(_) => {
                    cx.err(
                        v.span(),
                        format!(
                            "`cpus` must be a number such as 0.5 or 2, found {}",
                            describe(v)
                        ),
                    );
                    None
                }
            },
            _ => {
                cx.err(
                    v.span(),
                    format!(
                        "`cpus` must be a number such as 0.5 or 2, found {}",
                        describe(v)
                    ),
                );
                None
            }
        };
        if let Some(n) = n {
            if !n.is_finite() || n < 0.01 {
                cx.err_help(
                    v.span(),
                    format!("`cpus` = {n} is impossible: it must be at least 0.01"),
                    "0.5 = half of one CPU, 2 = two full CPUs",
                );
            } else if n > 4096.0 {
                cx.err(v.span(), format!("`cpus` = {n} is too large"));
            } else {
                r.cpus = Some(n);
            }
        }
    }
    if let Some(v) = t.get("pids") {
        if let Some(n) = want_int(cx, v, "`pids`", "a whole number of tasks") {
            if n < 1 {
                cx.err(
                    v.span(),
                    format!("`pids` = {n} is impossible: it must be at least 1"),
                );
            } else {
                r.pids = Some(n as u64);
            }
        }
    }
    if let Some(v) = t.get("cpuset") {
        let text = match v.get_ref() {
            DeValue::Integer(_) => int_of(v).and_then(Result::ok).map(|i| i.to_string()),
            _ => want_str(cx, v, "`cpuset`", "a CPU list such as \"0-1,3\"").map(str::to_string),
        };
        if let Some(text) = text {
            match check_cpuset(&text) {
                Ok(norm) => r.cpuset = Some(norm),
                Err(why) => cx.err(v.span(), format!("invalid `cpuset` \"{text}\": {why}")),
            }
        }
    }
    if let Some(v) = t.get("io_weight") {
        if let Some(n) = want_int(cx, v, "`io_weight`", "a number from 1 to 10000") {
            if (1..=10000).contains(&n) {
                r.io_weight = Some(n as u16);
            } else {
                cx.err(
                    v.span(),
                    format!("`io_weight` = {n} is out of range: it must be from 1 to 10000"),
                );
            }
        }
    }
    r
}

/// A size: a string with a unit, or an integer number of bytes.
fn size_value(cx: &mut Cx, v: &Val, what: &str) -> Option<u64> {
    let expected = "a size such as \"256M\" or \"1G\" (K/M/G/T = powers of 1024, KB/MB/GB/TB = powers of 1000), or a number of bytes";
    match v.get_ref() {
        DeValue::String(s) => match parse_size(s) {
            Ok(n) => Some(n),
            Err(why) => {
                cx.err_help(
                    v.span(),
                    format!("invalid {what} \"{s}\": {why}"),
                    format!("expected {expected}"),
                );
                None
            }
        },
        DeValue::Integer(_) => match int_of(v) {
            Some(Ok(n)) if n >= 0 => Some(n as u64),
            _ => {
                cx.err(v.span(), format!("{what} cannot be negative"));
                None
            }
        },
        _ => {
            cx.err(
                v.span(),
                format!("{what} must be {expected}, found {}", describe(v)),
            );
            None
        }
    }
}

/// Checks cpuset list syntax and that every CPU is online here; returns the text cleaned.
fn check_cpuset(text: &str) -> Result<String, String> {
    let parse_list = |t: &str| -> Result<Vec<(u32, u32)>, String> {
        let mut out = Vec::new();
        for part in t.trim().split(',') {
            let part = part.trim();
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let a: u32 = a
                .parse()
                .map_err(|_| format!("\"{part}\" is not a CPU number or range"))?;
            let b: u32 = b
                .parse()
                .map_err(|_| format!("\"{part}\" is not a CPU number or range"))?;
            if a > b {
                return Err(format!("range \"{part}\" goes backwards"));
            }
            out.push((a, b));
        }
        Ok(out)
    };
    let wanted = parse_list(text)?;
    if let Ok(online) = std::fs::read_to_string("/sys/devices/system/cpu/online") {
        if let Ok(online_l) = parse_list(&online) {
            for &(a, b) in &wanted {
                for cpu in a..=b {
                    if !online_l.iter().any(|&(x, y)| (x..=y).contains(&cpu)) {
                        return Err(format!(
                            "CPU {cpu} is not online here (online: {})",
                            online.trim()
                        ));
                    }
                }
            }
        }
    }
    Ok(text.split_whitespace().collect())
}

fn security(cx: &mut Cx, t: &Tbl) -> Security {
    let mut s = Security::default();
    let caps = |cx: &mut Cx, key: &str| -> Vec<(String, Span)> {
        let Some(v) = t.get(key) else {
            return Vec::new();
        };
        let Some(items) = want_str_array(cx, v, &format!("`{key}`")) else {
            return Vec::new();
        };
        let mut out: Vec<(String, Span)> = Vec::new();
        for (name, span) in items {
            let upper = name.trim().to_ascii_uppercase();
            let norm = if upper == "ALL" || upper.starts_with("CAP_") {
                upper
            } else {
                format!("CAP_{upper}")
            };
            if norm != "ALL" && !CAPABILITIES.contains(&norm.as_str()) {
                let help = match suggest(&norm, CAPABILITIES) {
                    Some(c) => format!("did you mean \"{c}\"?"),
                    None => {
                        "capability names are like \"NET_ADMIN\" or \"CAP_SYS_PTRACE\", or \"ALL\""
                            .into()
                    }
                };
                cx.err_help(span, format!("unknown capability \"{name}\""), help);
                continue;
            }
            if !out.iter().any(|(n, _)| *n == norm) {
                out.push((norm, span));
            }
        }
        out
    };
    let add = caps(cx, "cap_add");
    let drop = caps(cx, "cap_drop");
    for (name, span) in &add {
        if name != "ALL" && drop.iter().any(|(d, _)| d == name) {
            cx.err(
                span.clone(),
                format!("{name} is in both `cap_add` and `cap_drop`"),
            );
        }
    }
    s.cap_add = add.into_iter().map(|(n, _)| n).collect();
    s.cap_drop = drop.into_iter().map(|(n, _)| n).collect();
    if let Some(v) = t.get("no_new_privileges") {
        if let Some(b) = want_bool(cx, v, "`no_new_privileges`") {
            s.no_new_privileges = b;
        }
    }
    if let Some(v) = t.get("seccomp") {
        if let Some(x) = want_str(cx, v, "`seccomp`", "\"default\" or \"unconfined\"") {
            match x {
                "default" => s.seccomp = Seccomp::Default,
                "unconfined" => s.seccomp = Seccomp::Unconfined,
                other => {
                    let help = suggest(other, &["default", "unconfined"])
                        .map(|c| format!("did you mean \"{c}\"?"));
                    cx.err_at(
                        Some(v.span()),
                        format!("unknown seccomp mode \"{other}\", expected \"default\" or \"unconfined\""),
                        help,
                    );
                }
            }
        }
    }
    s
}

fn mounts(cx: &mut Cx, v: &Val) -> Vec<Mount> {
    let Some(arr) = v.get_ref().as_array() else {
        cx.err_help(
            v.span(),
            format!("`mounts` must be an array of tables, found {}", describe(v)),
            "write each mount as its own [[mounts]] table (two brackets)",
        );
        return Vec::new();
    };
    let mut out: Vec<Mount> = Vec::new();
    let mut seen: HashMap<PathBuf, usize> = HashMap::new();
    for (i, item) in arr.iter().enumerate() {
        let what = format!("[[mounts]] #{}", i + 1);
        let Some(t) = open(cx, item, &what, MOUNT_KEYS) else {
            continue;
        };
        if let Some(m) = mount(cx, &t) {
            if let Some(first) = seen.get(&m.target) {
                let span = t.get("target").map_or(item.span(), |x| x.span());
                cx.err_help(
                    span,
                    format!("mount target {} is used twice", m.target.display()),
                    format!("[[mounts]] #{} already mounts there", first + 1),
                );
                continue;
            }
            seen.insert(m.target.clone(), i);
            out.push(m);
        }
    }
    out
}

fn mount(cx: &mut Cx, t: &Tbl) -> Option<Mount> {
    let kinds = ["bind", "tmpfs", "volume"];
    let Some(tv) = t.get("type") else {
        cx.err_help(
            t.span.clone().unwrap_or_default(),
            format!("{} has no `type`", t.what),
            "add type = \"bind\", \"tmpfs\" or \"volume\"",
        );
        return None;
    };
    let kind = want_str(cx, tv, "`type`", "\"bind\", \"tmpfs\" or \"volume\"")?;
    if !kinds.contains(&kind) {
        let help = match suggest(kind, &kinds) {
            Some(k) => format!("did you mean \"{k}\"?"),
            None => "mount types are \"bind\", \"tmpfs\" and \"volume\"".into(),
        };
        cx.err_help(tv.span(), format!("unknown mount type \"{kind}\""), help);
        return None;
    }
    let target = match t.get("target") {
        None => {
            cx.err(
                t.span.clone().unwrap_or_default(),
                format!(
                    "{} has no `target`: where to mount inside the container",
                    t.what
                ),
            );
            None
        }
        Some(v) => want_str(cx, v, "`target`", "an absolute path").and_then(|s| {
            if !s.starts_with('/') {
                cx.err_help(
                    v.span(),
                    format!("mount target \"{s}\" must be an absolute path inside the container"),
                    format!("write \"/{}\"", s.trim_start_matches("./")),
                );
                return None;
            }
            if Path::new(s).components().any(|c| c == Component::ParentDir) {
                cx.err(
                    v.span(),
                    format!("mount target \"{s}\" must not contain \"..\""),
                );
                return None;
            }
            let p = normalize(Path::new(s));
            if p == Path::new("/") {
                cx.err(v.span(), "cannot mount over the container's root \"/\"");
                return None;
            }
            Some(p)
        }),
    };
    let readonly = t
        .get("readonly")
        .and_then(|v| want_bool(cx, v, "`readonly`"))
        .unwrap_or(false);
    let source = t.get("source");
    let size = t.get("size");
    let kind = match kind {
        "bind" => {
            let (sv, s) = sized_source(cx, t, source, size, "bind", "the host path")?;
            if s.is_empty() {
                cx.err(sv.span(), "`source` is empty");
                return None;
            }
            let p = resolve(&cx.dir, s);
            if let Err(e) = std::fs::metadata(&p) {
                cx.err_help(
                    sv.span(),
                    format!("bind source {} cannot be used: {e}", p.display()),
                    "bind sources are relative to the spec file's directory",
                );
                return None;
            }
            MountKind::Bind { source: p }
        }
        "tmpfs" => {
            if let Some(s) = source {
                cx.err(s.span(), "a tmpfs mount takes no `source`");
            }
            let size = match size {
                None => None,
                Some(v) => {
                    let n = size_value(cx, v, "`size`")?;
                    if n == 0 {
                        cx.err(
                            v.span(),
                            "`size` = 0 leaves no room: omit it for the default",
                        );
                        return None;
                    }
                    Some(n)
                }
            };
            MountKind::Tmpfs { size }
        }
        _ => {
            let (sv, name) = sized_source(cx, t, source, size, "volume", "the volume name")?;
            if let Err(why) = check_name(name) {
                cx.err(sv.span(), format!("invalid volume name \"{name}\": {why}"));
                return None;
            }
            MountKind::Volume {
                name: name.to_string(),
            }
        }
    };
    Some(Mount {
        kind,
        target: target?,
        readonly,
    })
}

/// The `source` string of a bind or volume mount (`kind`), which `size` does not apply to;
/// `what` says what the source names ("the host path").
fn sized_source<'v, 'i>(
    cx: &mut Cx,
    t: &Tbl,
    source: Option<&'v Val<'i>>,
    size: Option<&'v Val<'i>>,
    kind: &str,
    what: &str,
) -> Option<(&'v Val<'i>, &'v str)> {
    if let Some(s) = size {
        cx.err(s.span(), "`size` only applies to tmpfs mounts");
    }
    let Some(sv) = source else {
        cx.err(
            t.span.clone().unwrap_or_default(),
            format!("{}: a {kind} mount needs `source`, {what}", t.what),
        );
        return None;
    };
    let expected = what.trim_start_matches("the ");
    let expected = format!("a {expected}");
    Some((sv, want_str(cx, sv, "`source`", &expected)?))
}

fn lifecycle(cx: &mut Cx, t: &Tbl) -> (Lifecycle, Restart) {
    let mut l = Lifecycle::default();
    if let Some(v) = t.get("init") {
        if let Some(b) = want_bool(cx, v, "`init`") {
            l.init = b;
        }
    }
    if let Some(v) = t.get("stop_signal") {
        let parsed = match v.get_ref() {
            DeValue::String(s) => Some((s.to_string(), parse_signal(s))),
            DeValue::Integer(i) => Some((i.to_string(), parse_signal(i.as_str()))),
            _ => {
                cx.err(
                    v.span(),
                    format!("`stop_signal` must be a signal name such as \"SIGTERM\" or a number, found {}", describe(v)),
                );
                None
            }
        };
        match parsed {
            Some((_, Ok(n))) => l.stop_signal = n,
            Some((text, Err(why))) => {
                let names = signal_names();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                let upper = text.to_ascii_uppercase();
                let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
                let help = suggest(bare, &refs)
                    .map(|s| format!("did you mean \"SIG{s}\"?"))
                    .unwrap_or_else(|| {
                        "use a name such as \"SIGTERM\", \"INT\", or a number".into()
                    });
                cx.err_help(v.span(), format!("invalid `stop_signal`: {why}"), help);
            }
            None => {}
        }
    }
    if let Some(v) = t.get("stop_timeout") {
        if let Some(d) = duration_value(cx, v, "stop_timeout") {
            l.stop_timeout = d;
        }
    }
    let mut restart = Restart::No;
    if let Some(v) = t.get("restart") {
        if let Some(r) = want_str(
            cx,
            v,
            "`restart`",
            "\"no\", \"on-failure\", \"on-failure:N\" or \"always\"",
        ) {
            match parse_restart(r) {
                Ok(x) => restart = x,
                Err(why) => cx.err_help(
                    v.span(),
                    format!("invalid `restart` \"{r}\": {why}"),
                    "choose \"no\", \"on-failure\", \"on-failure:N\" (at most N restarts), \"always\" or \"unless-stopped\"",
                ),
            }
        }
    }
    (l, restart)
}

fn parse_restart(r: &str) -> Result<Restart, String> {
    match r {
        "no" | "never" => Ok(Restart::No),
        "always" => Ok(Restart::Always),
        "unless-stopped" => Ok(Restart::UnlessStopped),
        "on-failure" => Ok(Restart::OnFailure { max_retries: None }),
        other => match other.strip_prefix("on-failure:") {
            Some(n) => n
                .parse::<u32>()
                .map(|n| Restart::OnFailure {
                    max_retries: Some(n),
                })
                .map_err(|_| format!("\"{n}\" is not a number of retries")),
            None => Err("unknown policy".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users() {
        assert_eq!(
            parse_user("1000:1000"),
            Ok(User::Ids {
                uid: 1000,
                gid: Some(1000)
            })
        );
        assert_eq!(parse_user("0"), Ok(User::Ids { uid: 0, gid: None }));
        assert_eq!(
            parse_user("nobody:nogroup"),
            Ok(User::Name {
                user: "nobody".into(),
                group: Some("nogroup".into())
            })
        );
        assert!(parse_user("1000:staff").is_err());
        assert!(parse_user(":1").is_err());
        assert!(parse_user("a:b:c").is_err());
        assert!(parse_user("bad name").is_err());
        assert!(parse_user("4294967295").is_err());
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("memroy", RES_KEYS), Some("memory"));
        assert_eq!(suggest("cpu", RES_KEYS), Some("cpus"));
        assert_eq!(suggest("xyzzy", RES_KEYS), None);
    }
}
