//! A small PostgreSQL lexer: it splits SQL text into code, comments, string literals, quoted
//! identifiers and dollar-quoted bodies, which is all the checks need to tell a real statement
//! from text that only looks like one. Pure; never fails (unterminated regions run to the end).

use super::Migration;
use super::split::BREAKPOINT;
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Code,
    /// `-- ...` to the end of the line.
    LineComment,
    /// `/* ... */`, nested as PostgreSQL nests them.
    BlockComment,
    /// `'...'` or `E'...'`.
    String,
    /// `"..."`.
    QuotedIdent,
    /// `$tag$ ... $tag$`.
    DollarBody,
}

/// The regions of `text` in order; together they cover it exactly.
pub fn regions(text: &str) -> Vec<(Kind, Range<usize>)> {
    let b = text.as_bytes();
    let mut out: Vec<(Kind, Range<usize>)> = Vec::new();
    let mut push = |kind: Kind, range: Range<usize>| {
        if range.is_empty() {
            return;
        }
        match out.last_mut() {
            Some((k, r)) if *k == kind && kind == Kind::Code && r.end == range.start => {
                r.end = range.end
            }
            _ => out.push((kind, range)),
        }
    };
    let mut i = 0;
    while i < b.len() {
        let start = i;
        match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = text[i..].find('\n').map_or(b.len(), |n| i + n);
                push(Kind::LineComment, start..i);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                push(Kind::BlockComment, start..i.min(b.len()));
            }
            b'\'' => {
                let escapes =
                    i > 0 && matches!(b[i - 1], b'e' | b'E') && (i < 2 || !is_ident_byte(b[i - 2]));
                i += 1;
                while i < b.len() {
                    if escapes && b[i] == b'\\' {
                        i += 2;
                    } else if b[i] == b'\'' {
                        if b.get(i + 1) == Some(&b'\'') {
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                push(Kind::String, start..i.min(b.len()));
            }
            b'"' => {
                i += 1;
                while i < b.len() {
                    if b[i] == b'"' {
                        if b.get(i + 1) == Some(&b'"') {
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                push(Kind::QuotedIdent, start..i.min(b.len()));
            }
            b'$' if i == 0 || !is_ident_byte(b[i - 1]) => match dollar_tag(&text[i..]) {
                Some(tag) => {
                    let body = i + tag.len();
                    i = text[body..]
                        .find(tag)
                        .map_or(b.len(), |n| body + n + tag.len());
                    push(Kind::DollarBody, start..i);
                }
                None => {
                    i += 1;
                    push(Kind::Code, start..i);
                }
            },
            _ => {
                i += text[i..].chars().next().map_or(1, char::len_utf8);
                push(Kind::Code, start..i);
            }
        }
    }
    out
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// `$$` or `$tag$` at the start of `s` (a tag cannot start with a digit: `$1` is a parameter).
fn dollar_tag(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let mut j = 1;
    if b.get(1).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
        j += 1;
    }
    (b.get(j) == Some(&b'$')).then(|| &s[..=j])
}

/// What kind of region the byte at `at` lies in.
pub fn kind_at(regions: &[(Kind, Range<usize>)], at: usize) -> Kind {
    regions
        .iter()
        .find(|(_, r)| r.contains(&at))
        .map_or(Kind::Code, |(k, _)| *k)
}

/// Problems `validate` reports for one migration file: breakpoint markers that drizzle's split
/// cuts in the middle of a comment, string or dollar-quoted body (E4, drizzle #2126: an
/// introspected baseline wrapped in `/* */`), and marker look-alikes that it does not split on
/// (E5: the statements on both sides stay one chunk).
pub fn marker_problems(m: &Migration) -> Vec<String> {
    let text = &m.text;
    let regions = regions(text);
    let mut problems = Vec::new();
    for (at, _) in text.match_indices(BREAKPOINT) {
        let (line, _) = super::split::line_col(text, at);
        let inside = match kind_at(&regions, at) {
            Kind::BlockComment => Some("a /* */ comment"),
            Kind::String => Some("a string literal"),
            Kind::DollarBody => Some("a dollar-quoted body"),
            Kind::QuotedIdent => Some("a quoted identifier"),
            Kind::Code | Kind::LineComment => None,
        };
        if let Some(inside) = inside {
            problems.push(format!(
                "{}:{line}: a `{BREAKPOINT}` marker sits inside {inside}; drizzle (and \
                 portcullis) split there anyway, so the statement is cut in two and fails (an \
                 introspected baseline wrapped in /* */ does this: drizzle-orm #2126)",
                m.file()
            ));
        }
    }
    for (n, line) in text.lines().enumerate() {
        let lower = line.to_ascii_lowercase();
        if lower.contains("statement-breakpoint") && !line.contains(BREAKPOINT) {
            problems.push(format!(
                "{}:{}: `{}` looks like a breakpoint marker but is not exactly `{BREAKPOINT}`, so \
                 drizzle does not split there and the statements around it run as one query",
                m.file(),
                n + 1,
                line.trim()
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn kinds(text: &str) -> Vec<(Kind, &str)> {
        regions(text)
            .into_iter()
            .map(|(k, r)| (k, &text[r]))
            .collect()
    }

    #[test]
    fn splits_code_comments_and_literals() {
        assert_eq!(
            kinds("select 'a''b', \"x\"\"y\" -- c\n/* d /* e */ f */ $$g$$ $t$h$t$ $1"),
            vec![
                (Kind::Code, "select "),
                (Kind::String, "'a''b'"),
                (Kind::Code, ", "),
                (Kind::QuotedIdent, "\"x\"\"y\""),
                (Kind::Code, " "),
                (Kind::LineComment, "-- c"),
                (Kind::Code, "\n"),
                (Kind::BlockComment, "/* d /* e */ f */"),
                (Kind::Code, " "),
                (Kind::DollarBody, "$$g$$"),
                (Kind::Code, " "),
                (Kind::DollarBody, "$t$h$t$"),
                (Kind::Code, " $1"),
            ]
        );
        assert_eq!(
            kinds("E'it\\'s' x"),
            vec![
                (Kind::Code, "E"),
                (Kind::String, "'it\\'s'"),
                (Kind::Code, " x")
            ]
        );
        // Unterminated regions run to the end instead of failing.
        assert_eq!(kinds("/* open"), vec![(Kind::BlockComment, "/* open")]);
        assert_eq!(kinds("'open"), vec![(Kind::String, "'open")]);
        // A `$` inside an identifier is not a dollar quote.
        assert_eq!(kinds("a$b$ c"), vec![(Kind::Code, "a$b$ c")]);
    }

    fn mig(sql: &str) -> Migration {
        Migration::new(
            0,
            "0000_x",
            1,
            PathBuf::from("m/0000_x.sql"),
            sql.as_bytes(),
        )
    }

    #[test]
    fn finds_markers_that_cut_comments_or_strings() {
        let baseline = "-- Current sql file was generated after introspecting the database\n\
                        /*\nCREATE TABLE a (id int);\n--> statement-breakpoint\nCREATE TABLE b (id int);\n*/";
        let p = marker_problems(&mig(baseline));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("m/0000_x.sql:4:"), "{p:?}");
        assert!(p[0].contains("/* */ comment"));
        let p = marker_problems(&mig("select '--> statement-breakpoint';"));
        assert!(p[0].contains("string literal"), "{p:?}");
        // The normal layout has no problem.
        assert!(marker_problems(&mig("a;\n--> statement-breakpoint\nb;")).is_empty());
    }

    #[test]
    fn finds_marker_look_alikes() {
        let p = marker_problems(&mig(
            "a;\n-->statement-breakpoint\nb;\n--> Statement-Breakpoint\n",
        ));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("m/0000_x.sql:2:"));
        assert!(p[1].starts_with("m/0000_x.sql:4:"));
    }
}
