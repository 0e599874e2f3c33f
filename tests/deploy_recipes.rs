//! The deployment recipes (`deploy/`, `Dockerfile`) against the binary they ship: every
//! environment variable a recipe sets for portcullis is one portcullis knows (and its value is
//! one portcullis accepts), and every portcullis command line a recipe runs exists
//! (`portcullis <args> --help` exits 0).
//!
//! How the recipes are read, without a YAML dependency: [`yaml`] below turns each file into a
//! tree, line by line, for the block-style subset the recipes are written in (mappings,
//! sequences, plain and quoted scalars, one-line flow sequences, `|`/`>` block scalars, comments,
//! `---`). Whatever lies outside that subset (anchors, aliases, tags, flow mappings, plain
//! scalars continued on the next line) is an error naming the file and line, so a recipe is
//! either read exactly or the test fails: it never skips a part it did not understand.
//!
//! Which parts run portcullis: a Kubernetes container, a Compose service or a Render pre-deploy
//! command whose command line starts with `portcullis` or `/…/portcullis`. Recipes name the
//! binary explicitly (`command: ["/portcullis"]`, `entrypoint: ["/portcullis"]`) instead of
//! relying on the image's ENTRYPOINT; the test enforces that for every image whose name says
//! portcullis or migrations, and refuses a `portcullis` word anywhere else in a command line
//! (a `sh -c "portcullis …"` would escape the checks). Other containers (the app, PostgreSQL)
//! are the user's: their variables are not portcullis's business.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml::Node;

/// Unprefixed variables portcullis reads (besides `PORTCULLIS_*`), from the interface.
const UNPREFIXED: &[&str] = &[
    "DATABASE_URL",
    "DATABASE_URL_FILE",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGAPPNAME",
];

/// Stands in for a URL a recipe takes from a Secret or a managed database.
const PLACEHOLDER_URL: &str = "postgres://user:secret@db.invalid:5432/app";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn known(name: &str) -> bool {
    UNPREFIXED.contains(&name)
        || name.strip_prefix("PORTCULLIS_").is_some_and(|rest| {
            // PORTCULLIS_SEED_VAR_<NAME>: values handed to the seeds, a family of names.
            portcullis::config::KNOWN_PORTCULLIS_VARS.contains(&rest)
                || rest.starts_with(portcullis::config::SEED_VAR_PREFIX)
        })
}

/// One place that runs a program: a container, a Compose service, a Render command.
#[derive(Debug)]
struct Runner {
    /// `file:line what`, for messages.
    at: String,
    image: Option<String>,
    /// The whole command line when the recipe gives one (command + args, entrypoint + command).
    argv: Option<Vec<String>>,
    /// Variables set for it: name and literal value (None: from a Secret, database, file...).
    env: Vec<(String, Option<String>)>,
    /// Something the scan cannot see through (envFrom, env_file, fromGroup).
    opaque_env: Option<String>,
}

impl Runner {
    fn is_portcullis(&self) -> bool {
        self.argv
            .as_ref()
            .and_then(|a| a.first())
            .is_some_and(|p| Path::new(p).file_name().is_some_and(|n| n == "portcullis"))
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

fn scalar(n: &Node) -> Option<&str> {
    match n {
        Node::Scalar(s, _) => Some(s),
        _ => None,
    }
}

/// A list of strings (`["a", "b"]` or a block sequence), or one string.
fn words(n: &Node, what: &str) -> Vec<String> {
    match n {
        Node::Seq(items, _) => items
            .iter()
            .map(|i| {
                scalar(i)
                    .unwrap_or_else(|| panic!("{what}: expected a list of strings"))
                    .to_string()
            })
            .collect(),
        Node::Scalar(s, _) => s.split_whitespace().map(str::to_string).collect(),
        other => panic!("{what}: expected a list of strings, got {other:?}"),
    }
}

/// Every container of a Kubernetes object, wherever its pod template is.
fn kubernetes_runners(file: &str, doc: &Node, out: &mut Vec<Runner>) {
    match doc {
        Node::Map(entries, _) => {
            for (key, value) in entries {
                if (key == "containers" || key == "initContainers")
                    && let Node::Seq(items, _) = value
                {
                    for c in items {
                        out.push(kubernetes_container(file, c));
                    }
                } else {
                    kubernetes_runners(file, value, out);
                }
            }
        }
        Node::Seq(items, _) => items.iter().for_each(|i| kubernetes_runners(file, i, out)),
        _ => {}
    }
}

fn kubernetes_container(file: &str, c: &Node) -> Runner {
    let name = c.get("name").and_then(scalar).unwrap_or("?");
    let at = format!("{file}:{} container {name}", c.line());
    let mut argv = c.get("command").map(|n| words(n, &at));
    if let Some(args) = c.get("args") {
        argv.get_or_insert_with(Vec::new).extend(words(args, &at));
    }
    let env = match c.get("env") {
        None => Vec::new(),
        Some(Node::Seq(items, _)) => items
            .iter()
            .map(|e| {
                let n = e
                    .get("name")
                    .and_then(scalar)
                    .unwrap_or_else(|| panic!("{file}:{}: env entry without a name", e.line()));
                (
                    n.to_string(),
                    e.get("value").and_then(scalar).map(str::to_string),
                )
            })
            .collect(),
        Some(other) => panic!("{at}: env is not a list: {other:?}"),
    };
    Runner {
        image: c.get("image").and_then(scalar).map(str::to_string),
        argv,
        env,
        opaque_env: c.get("envFrom").map(|_| "envFrom".to_string()),
        at,
    }
}

fn compose_runners(file: &str, doc: &Node, out: &mut Vec<Runner>) {
    let Some(Node::Map(services, _)) = doc.get("services") else {
        panic!("{file}: no services");
    };
    for (name, s) in services {
        let at = format!("{file}:{} service {name}", s.line());
        let mut argv = s.get("entrypoint").map(|n| words(n, &at));
        if let Some(cmd) = s.get("command") {
            argv.get_or_insert_with(Vec::new).extend(words(cmd, &at));
        }
        let env = match s.get("environment") {
            None => Vec::new(),
            Some(Node::Map(vars, _)) => vars
                .iter()
                .map(|(k, v)| (k.clone(), scalar(v).map(str::to_string)))
                .collect(),
            Some(Node::Seq(items, _)) => items
                .iter()
                .map(|i| {
                    let s = scalar(i).unwrap_or_else(|| panic!("{at}: environment item"));
                    match s.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (s.to_string(), None),
                    }
                })
                .collect(),
            Some(other) => panic!("{at}: environment is neither a map nor a list: {other:?}"),
        };
        out.push(Runner {
            image: s.get("image").and_then(scalar).map(str::to_string),
            argv,
            env,
            opaque_env: s.get("env_file").map(|_| "env_file".to_string()),
            at,
        });
    }
}

fn render_runners(file: &str, doc: &Node, out: &mut Vec<Runner>) {
    let Some(Node::Seq(services, _)) = doc.get("services") else {
        panic!("{file}: no services");
    };
    for s in services {
        let name = s.get("name").and_then(scalar).unwrap_or("?");
        let mut env = Vec::new();
        let mut opaque_env = None;
        if let Some(Node::Seq(vars, _)) = s.get("envVars") {
            for v in vars {
                match v.get("key").and_then(scalar) {
                    Some(k) => env.push((
                        k.to_string(),
                        v.get("value").and_then(scalar).map(str::to_string),
                    )),
                    None => {
                        opaque_env = Some("envVars entry without a key (fromGroup)".to_string())
                    }
                }
            }
        }
        // The service's environment is shared by every command Render runs in it.
        for key in [
            "preDeployCommand",
            "dockerCommand",
            "startCommand",
            "buildCommand",
        ] {
            if let Some(cmd) = s.get(key) {
                out.push(Runner {
                    at: format!("{file}:{} service {name} {key}", cmd.line()),
                    image: None,
                    argv: Some(words(cmd, key)),
                    env: env.clone(),
                    opaque_env: opaque_env.clone(),
                });
            }
        }
    }
}

/// Every runner of every recipe, and the files each kind came from.
fn all_runners() -> Vec<Runner> {
    let mut files = Vec::new();
    yaml_files(&root().join("deploy"), &mut files);
    assert!(!files.is_empty(), "no YAML under deploy/");
    let mut runners = Vec::new();
    for path in &files {
        let file = rel(path);
        let text = std::fs::read_to_string(path).unwrap();
        let docs = yaml::parse(&text).unwrap_or_else(|e| panic!("{file}:{e}"));
        let before = runners.len();
        let kind = path
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str());
        match kind {
            Some("kubernetes") => docs
                .iter()
                .for_each(|d| kubernetes_runners(&file, d, &mut runners)),
            Some("compose") => docs
                .iter()
                .for_each(|d| compose_runners(&file, d, &mut runners)),
            Some("render") => docs
                .iter()
                .for_each(|d| render_runners(&file, d, &mut runners)),
            // The linter's own settings.
            Some("deploy") if path.file_name().is_some_and(|n| n == ".yamllint.yaml") => continue,
            _ => {
                panic!("{file}: a recipe in a folder this test does not know; teach it the format")
            }
        }
        let found = runners[before..]
            .iter()
            .filter(|r| r.is_portcullis())
            .count();
        let is_secret = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("secret"));
        assert!(
            is_secret || found > 0,
            "{file}: no place that runs portcullis was found; a recipe that runs it must say \
             so with an explicit command (see this test's header)"
        );
    }
    runners
}

#[test]
fn every_portcullis_variable_in_the_recipes_is_known_and_valid() {
    let runners = all_runners();
    let mut checked = 0;
    for r in runners.iter().filter(|r| r.is_portcullis()) {
        assert!(
            r.opaque_env.is_none(),
            "{}: {} hides variable names from this check; list \
             them one by one",
            r.at,
            r.opaque_env.as_deref().unwrap_or("")
        );
        let unknown: Vec<&str> = r
            .env
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !known(k))
            .collect();
        assert!(
            unknown.is_empty(),
            "{}: sets {unknown:?}, which portcullis does not read (a typo would be ignored, or \
             rejected with exit 2 for PORTCULLIS_*). Known: {UNPREFIXED:?}, \
             PORTCULLIS_SEED_VAR_<NAME> and PORTCULLIS_ + {:?}",
            r.at,
            portcullis::config::KNOWN_PORTCULLIS_VARS
        );
        // The values, through the real configuration reader. A URL from a Secret, a database or
        // a mounted file is replaced by a placeholder; `${...}` is Compose's interpolation.
        let mut vars: Vec<(String, String)> = Vec::new();
        for (k, v) in &r.env {
            match (k.as_str(), v) {
                ("DATABASE_URL" | "DATABASE_URL_FILE", _) => {
                    vars.push(("DATABASE_URL".into(), PLACEHOLDER_URL.into()))
                }
                (_, Some(v)) if !v.contains("${") => vars.push((k.clone(), v.clone())),
                _ => {}
            }
        }
        if !vars
            .iter()
            .any(|(k, _)| k == "DATABASE_URL" || k == "PGHOST")
        {
            vars.push(("DATABASE_URL".into(), PLACEHOLDER_URL.into()));
        }
        if let Err(e) = portcullis::config::Config::from_vars(vars.clone()) {
            panic!(
                "{}: portcullis rejects the recipe's settings {vars:?}: {e}",
                r.at
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 6,
        "only {checked} portcullis runners found: the scan lost some"
    );
}

/// `portcullis <args> --help`, in an empty environment: exit 0 means every subcommand and flag
/// in `args` exists.
fn help_exits_zero(args: &[String]) -> Result<(), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .arg("--help")
        .env_clear()
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The first argument that is not a flag: the subcommand (`migrate` when there is none).
fn subcommand(args: &[String]) -> String {
    args.iter()
        .find(|a| !a.starts_with('-'))
        .cloned()
        .unwrap_or_else(|| "migrate".to_string())
}

#[test]
fn every_portcullis_command_in_the_recipes_exists() {
    let runners = all_runners();
    let mut failures = Vec::new();
    let mut used = BTreeSet::new();
    for r in &runners {
        let argv = r.argv.clone().unwrap_or_default();
        if r.is_portcullis() {
            let args = &argv[1..];
            used.insert(subcommand(args));
            if let Err(e) = help_exits_zero(args) {
                failures.push(format!(
                    "{}: portcullis {} --help: {e}",
                    r.at,
                    args.join(" ")
                ));
            }
            continue;
        }
        // Anything else must not run portcullis behind the scan's back.
        if argv.iter().any(|a| a.contains("portcullis")) {
            failures.push(format!(
                "{}: runs portcullis in a way this test cannot check: {argv:?}",
                r.at
            ));
        }
        let image = r.image.as_deref().unwrap_or("");
        if r.argv.is_none() && (image.contains("portcullis") || image.contains("migrations")) {
            failures.push(format!(
                "{}: image {image} runs its ENTRYPOINT; name the command (command: \
                 [\"/portcullis\"], args: [...]) so that it is checked",
                r.at
            ));
        }
    }
    // The Dockerfile: ENTRYPOINT ["/portcullis"] and its default CMD.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let json_of = |instr: &str| -> Vec<Vec<String>> {
        dockerfile
            .lines()
            .filter_map(|l| l.strip_prefix(instr))
            .map(|rest| serde_json::from_str(rest.trim()).expect("exec-form JSON array"))
            .collect()
    };
    assert_eq!(
        json_of("ENTRYPOINT "),
        vec![vec!["/portcullis".to_string()]]
    );
    for cmd in json_of("CMD ") {
        used.insert(subcommand(&cmd));
        if let Err(e) = help_exits_zero(&cmd) {
            failures.push(format!(
                "Dockerfile: CMD {cmd:?}: portcullis {} --help: {e}",
                cmd.join(" ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The recipes show both ways of running it.
    for expected in ["migrate", "await"] {
        assert!(
            used.contains(expected),
            "no recipe runs `portcullis {expected}`: {used:?}"
        );
    }
}

#[test]
fn the_reader_reads_what_the_recipes_use_and_refuses_the_rest() {
    let text = r#"# a comment
a: plain value  # trailing comment
url: postgres://u:p@h:5432/d?x=1#not-a-comment
quoted: "two: words # kept"
single: 'it''s'
list: ["/portcullis", "--flag=a, b", 3]
block:
  - name: X
    value: "1"
  - - nested
same_indent_seq:
- one
- two
text: |
  line one
  # not a comment
empty:
---
second: doc
"#;
    let docs = yaml::parse(text).unwrap();
    assert_eq!(docs.len(), 2);
    let d = &docs[0];
    let s = |k: &str| d.get(k).and_then(scalar).unwrap().to_string();
    assert_eq!(s("a"), "plain value");
    assert_eq!(s("url"), "postgres://u:p@h:5432/d?x=1#not-a-comment");
    assert_eq!(s("quoted"), "two: words # kept");
    assert_eq!(s("single"), "it's");
    assert_eq!(
        words(d.get("list").unwrap(), "list"),
        ["/portcullis", "--flag=a, b", "3"]
    );
    let Node::Seq(items, _) = d.get("block").unwrap() else {
        panic!()
    };
    assert_eq!(items[0].get("value").and_then(scalar), Some("1"));
    assert_eq!(items[0].line(), 8);
    assert!(matches!(&items[1], Node::Seq(inner, _) if inner.len() == 1));
    assert_eq!(
        words(d.get("same_indent_seq").unwrap(), "s"),
        ["one", "two"]
    );
    assert_eq!(s("text"), "line one\n# not a comment\n");
    assert!(matches!(d.get("empty"), Some(Node::Null(_))));
    assert_eq!(docs[1].get("second").and_then(scalar), Some("doc"));

    for bad in [
        "a: &anchor x\n",
        "a: *alias\n",
        "a: !tag x\n",
        "a: {b: c}\n",
        "a: b\n  c\n",
        "a: [b, [c]]\n",
        "a: \"unterminated\n",
        "a: b\na: c\n",
    ] {
        assert!(yaml::parse(bad).is_err(), "accepted {bad:?}");
    }
}

/// A reader for the block-style YAML subset the recipes use; see the module header.
mod yaml {
    #[derive(Debug, Clone)]
    pub enum Node {
        /// Value and 1-based line.
        Scalar(String, usize),
        Seq(Vec<Node>, usize),
        Map(Vec<(String, Node)>, usize),
        Null(usize),
    }

    impl Node {
        pub fn get(&self, key: &str) -> Option<&Node> {
            match self {
                Node::Map(entries, _) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
                _ => None,
            }
        }
        pub fn line(&self) -> usize {
            match self {
                Node::Scalar(_, l) | Node::Seq(_, l) | Node::Map(_, l) | Node::Null(l) => *l,
            }
        }
    }

    #[derive(Debug, Clone)]
    struct Line {
        no: usize,
        indent: usize,
        /// Without indentation and without a trailing comment.
        text: String,
        /// As written (for block scalars, where `#` is content).
        raw: String,
    }

    /// Parses every document of `src`. Errors read `line: message`.
    pub fn parse(src: &str) -> Result<Vec<Node>, String> {
        let mut docs = Vec::new();
        let mut current: Vec<Line> = Vec::new();
        for (i, raw) in src.lines().enumerate() {
            if raw[..raw.len() - raw.trim_start().len()].contains('\t') {
                return Err(format!("{}: tab in indentation", i + 1));
            }
            if raw == "---" || raw.starts_with("--- ") {
                docs.push(std::mem::take(&mut current));
                continue;
            }
            let indent = raw.len() - raw.trim_start_matches(' ').len();
            let text = strip_comment(raw.trim_start()).trim_end().to_string();
            current.push(Line {
                no: i + 1,
                indent,
                text,
                raw: raw.to_string(),
            });
        }
        docs.push(current);
        let mut out = Vec::new();
        for lines in docs {
            let mut p = Parser { lines, pos: 0 };
            p.skip_blank();
            if p.pos >= p.lines.len() {
                continue;
            }
            let indent = p.lines[p.pos].indent;
            let node = p.node(indent)?;
            p.skip_blank();
            if let Some(l) = p.lines.get(p.pos) {
                return Err(format!("{}: unexpected content (indentation?)", l.no));
            }
            out.push(node);
        }
        Ok(out)
    }

    /// The text before a comment: `#` at the start or after a space, outside quotes.
    fn strip_comment(s: &str) -> &str {
        let (mut single, mut double, mut prev) = (false, false, ' ');
        for (i, c) in s.char_indices() {
            match c {
                '\'' if !double => single = !single,
                '"' if !single && prev != '\\' => double = !double,
                '#' if !single && !double && prev.is_whitespace() => return &s[..i],
                _ => {}
            }
            prev = c;
        }
        s
    }

    struct Parser {
        lines: Vec<Line>,
        pos: usize,
    }

    fn is_item(text: &str) -> bool {
        text == "-" || text.starts_with("- ")
    }

    impl Parser {
        fn skip_blank(&mut self) {
            while self.pos < self.lines.len() && self.lines[self.pos].text.is_empty() {
                self.pos += 1;
            }
        }

        /// The node whose first line is the next non-blank one, at `indent`.
        fn node(&mut self, indent: usize) -> Result<Node, String> {
            self.skip_blank();
            let l = &self.lines[self.pos];
            if l.indent != indent {
                return Err(format!("{}: unexpected indentation", l.no));
            }
            if is_item(&l.text) {
                self.seq(indent)
            } else if split_key(&l.text)?.is_some() {
                self.map(indent)
            } else {
                Err(format!(
                    "{}: a plain value on a line of its own (continued scalar?)",
                    l.no
                ))
            }
        }

        fn seq(&mut self, indent: usize) -> Result<Node, String> {
            let first = self.lines[self.pos].no;
            let mut items = Vec::new();
            loop {
                self.skip_blank();
                let Some(l) = self.lines.get(self.pos).cloned() else {
                    break;
                };
                if l.indent < indent || (l.indent == indent && !is_item(&l.text)) {
                    break;
                }
                if l.indent > indent {
                    return Err(format!("{}: unexpected indentation in a list", l.no));
                }
                let rest = l.text[1..].trim_start().to_string();
                if rest.is_empty() {
                    // The item is the block below.
                    self.pos += 1;
                    self.skip_blank();
                    let Some(next) = self.lines.get(self.pos) else {
                        items.push(Node::Null(l.no));
                        break;
                    };
                    if next.indent <= indent {
                        items.push(Node::Null(next.no));
                        continue;
                    }
                    let ni = next.indent;
                    items.push(self.node(ni)?);
                } else if is_item(&rest) || split_key(&rest)?.is_some() {
                    // `- key: value` / `- - x`: the item is a block starting at `rest`'s column.
                    let column = l.indent + (l.text.len() - rest.len());
                    let line = &mut self.lines[self.pos];
                    line.indent = column;
                    line.text = rest;
                    items.push(self.node(column)?);
                } else {
                    items.push(inline(&rest, l.no)?);
                    self.pos += 1;
                }
            }
            Ok(Node::Seq(items, first))
        }

        fn map(&mut self, indent: usize) -> Result<Node, String> {
            let first = self.lines[self.pos].no;
            let mut entries: Vec<(String, Node)> = Vec::new();
            loop {
                self.skip_blank();
                let Some(l) = self.lines.get(self.pos).cloned() else {
                    break;
                };
                if l.indent < indent || (l.indent == indent && is_item(&l.text)) {
                    break;
                }
                if l.indent > indent {
                    return Err(format!("{}: unexpected indentation in a mapping", l.no));
                }
                let Some((key, value)) = split_key(&l.text)? else {
                    return Err(format!("{}: expected `key: value`", l.no));
                };
                if entries.iter().any(|(k, _)| *k == key) {
                    return Err(format!("{}: duplicate key {key}", l.no));
                }
                self.pos += 1;
                let node = if value.is_empty() {
                    self.skip_blank();
                    match self.lines.get(self.pos) {
                        Some(n) if n.indent > indent => {
                            let ni = n.indent;
                            self.node(ni)?
                        }
                        // A list may sit at its key's indentation.
                        Some(n) if n.indent == indent && is_item(&n.text) => self.seq(indent)?,
                        _ => Node::Null(l.no),
                    }
                } else if value.starts_with('|') || value.starts_with('>') {
                    self.block_scalar(&value, indent, l.no)?
                } else {
                    inline(&value, l.no)?
                };
                entries.push((key, node));
            }
            Ok(Node::Map(entries, first))
        }

        /// `|` (kept) or `>` (folded) with an optional `-`: the more-indented lines below.
        fn block_scalar(&mut self, head: &str, indent: usize, no: usize) -> Result<Node, String> {
            if !matches!(head, "|" | "|-" | ">" | ">-") {
                return Err(format!("{no}: block scalar header {head:?} not supported"));
            }
            let mut body: Vec<String> = Vec::new();
            let mut content_indent: Option<usize> = None;
            while let Some(l) = self.lines.get(self.pos) {
                let blank = l.raw.trim().is_empty();
                if !blank && l.indent <= indent {
                    break;
                }
                if blank {
                    body.push(String::new());
                } else {
                    let ci = *content_indent.get_or_insert(l.indent);
                    if l.indent < ci {
                        return Err(format!(
                            "{}: less indented than the block's first line",
                            l.no
                        ));
                    }
                    body.push(l.raw[ci..].to_string());
                }
                self.pos += 1;
            }
            while body.last().is_some_and(String::is_empty) {
                body.pop();
            }
            let joined = if head.starts_with('>') {
                body.join(" ")
            } else {
                body.join("\n")
            };
            let text = if head.ends_with('-') {
                joined
            } else {
                joined + "\n"
            };
            Ok(Node::Scalar(text, no))
        }
    }

    /// `key: rest` or `key:` outside quotes and brackets; None for a line with no key.
    fn split_key(text: &str) -> Result<Option<(String, String)>, String> {
        let (mut single, mut double, mut depth) = (false, false, 0i32);
        let bytes = text.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\'' if !double => single = !single,
                b'"' if !single && (i == 0 || bytes[i - 1] != b'\\') => double = !double,
                b'[' | b'{' if !single && !double => depth += 1,
                b']' | b'}' if !single && !double => depth -= 1,
                b':' if !single && !double && depth == 0 => {
                    let end = i + 1 == bytes.len() || bytes[i + 1] == b' ';
                    if end {
                        let key = unquote(text[..i].trim(), 0)?;
                        return Ok(Some((key, text[i + 1..].trim().to_string())));
                    }
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// A value on the key's line: a scalar or a one-line flow sequence of scalars.
    fn inline(v: &str, no: usize) -> Result<Node, String> {
        match v.chars().next() {
            Some('&' | '*' | '!' | '{' | '?' | '%' | '@' | '`') => Err(format!(
                "{no}: {v:?}: anchors, aliases, tags and flow mappings are not supported"
            )),
            Some('[') => {
                let inner = v
                    .strip_prefix('[')
                    .and_then(|s| s.strip_suffix(']'))
                    .ok_or_else(|| format!("{no}: flow sequence must end on its line"))?;
                let mut items = Vec::new();
                for part in split_flow(inner, no)? {
                    if part.starts_with('[') || part.starts_with('{') {
                        return Err(format!("{no}: nested flow collections are not supported"));
                    }
                    items.push(Node::Scalar(unquote(&part, no)?, no));
                }
                Ok(Node::Seq(items, no))
            }
            _ => Ok(Node::Scalar(unquote(v, no)?, no)),
        }
    }

    /// Splits a flow sequence's inside at commas outside quotes.
    fn split_flow(s: &str, no: usize) -> Result<Vec<String>, String> {
        let (mut out, mut cur) = (Vec::new(), String::new());
        let (mut single, mut double, mut prev) = (false, false, ' ');
        for c in s.chars() {
            match c {
                '\'' if !double => single = !single,
                '"' if !single && prev != '\\' => double = !double,
                ',' if !single && !double => {
                    out.push(cur.trim().to_string());
                    cur.clear();
                    prev = c;
                    continue;
                }
                _ => {}
            }
            cur.push(c);
            prev = c;
        }
        if single || double {
            return Err(format!("{no}: unterminated quote"));
        }
        if !cur.trim().is_empty() {
            out.push(cur.trim().to_string());
        }
        Ok(out)
    }

    /// A plain, 'single' or "double" quoted scalar's value.
    fn unquote(s: &str, no: usize) -> Result<String, String> {
        if let Some(body) = s.strip_prefix('\'') {
            let body = body
                .strip_suffix('\'')
                .ok_or_else(|| format!("{no}: unterminated quote"))?;
            return Ok(body.replace("''", "'"));
        }
        if let Some(body) = s.strip_prefix('"') {
            let body = body
                .strip_suffix('"')
                .filter(|b| !b.ends_with('\\') || b.ends_with("\\\\"))
                .ok_or_else(|| format!("{no}: unterminated quote"))?;
            let mut out = String::new();
            let mut chars = body.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(c @ ('\\' | '"' | '/' | ' ')) => out.push(c),
                    other => return Err(format!("{no}: escape \\{other:?} not supported")),
                }
            }
            return Ok(out);
        }
        if s.starts_with(['&', '*', '!', '{', '[']) {
            return Err(format!("{no}: {s:?} not supported"));
        }
        Ok(s.to_string())
    }
}
