//! Rendering of spec problems as `file:line:column: error: ...` with the source line and a caret.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;

/// One problem found in a spec, with the place at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// 1-based column (in characters), when the problem has a place in the file.
    pub column: Option<usize>,
    /// What was wrong and what was expected.
    pub message: String,
    /// A hint, such as `did you mean "memory"?`.
    pub help: Option<String>,
    /// Byte range in the file.
    pub span: Option<Range<usize>>,
}

/// Byte offset -> 1-based (line, column in characters).
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

impl Diagnostic {
    /// A problem at byte range `span` of `src` (or with no place when `span` is `None`).
    pub(crate) fn new(
        src: &str,
        span: Option<Range<usize>>,
        message: String,
        help: Option<String>,
    ) -> Self {
        let (line, column) = match &span {
            Some(s) => {
                let (l, c) = line_col(src, s.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        Diagnostic {
            line,
            column,
            message,
            help,
            span,
        }
    }

    /// The full user-facing text: header, source line with carets, help.
    pub(crate) fn render(&self, file: &Path, src: &str) -> String {
        let mut out = String::new();
        match (self.line, self.column) {
            (Some(l), Some(c)) => {
                let _ = write!(out, "{}:{l}:{c}: error: {}", file.display(), self.message);
            }
            _ => {
                let _ = write!(out, "{}: error: {}", file.display(), self.message);
            }
        }
        if let (Some(line), Some(col), Some(span)) = (self.line, self.column, &self.span) {
            if let Some(text) = src.lines().nth(line - 1) {
                let text = text.trim_end_matches('\r');
                let num = line.to_string();
                let pad = " ".repeat(num.len());
                // Carets cover the span, clipped to this line, at least one.
                let avail = text.chars().count().saturating_sub(col - 1);
                let mut end = span.end.min(src.len());
                while !src.is_char_boundary(end) {
                    end -= 1;
                }
                let start = span.start.min(end);
                let width = src[start..end].chars().count().min(avail).max(1);
                let lead: String = text
                    .chars()
                    .take(col - 1)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                let _ = write!(
                    out,
                    "\n{pad} |\n{num} | {text}\n{pad} | {lead}{}",
                    "^".repeat(width)
                );
            }
        }
        if let Some(help) = &self.help {
            let _ = write!(out, "\nhelp: {help}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_characters() {
        let src = "a = 1\nnäme = \"x\"\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        // The '=' on line 2 is its 6th character but 7th byte.
        assert_eq!(line_col(src, src.rfind('=').unwrap()), (2, 6));
    }

    #[test]
    fn carets_follow_tabs_and_cover_the_span() {
        let src = "[x]\n\tkey = \"bad\"\n";
        let start = src.find('"').unwrap();
        let d = Diagnostic::new(
            src,
            Some(start..start + 5),
            "nope".into(),
            Some("hint".into()),
        );
        let text = d.render(Path::new("f.toml"), src);
        assert_eq!(
            text,
            "f.toml:2:8: error: nope\n  |\n2 | \tkey = \"bad\"\n  | \t      ^^^^^\nhelp: hint"
        );
    }
}
