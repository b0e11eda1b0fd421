//! Reading `/proc/self/mountinfo`, which the mount program and its users consult to find mounts.

/// Decodes mountinfo's octal escapes (`\040` for a space, `\011` tab, `\012` newline, `\134`
/// backslash) in a path field.
pub fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = digits.and_then(|t| u8::from_str_radix(t, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn octal_escapes() {
        assert_eq!(super::unescape(r"/a\040b\134c"), "/a b\\c");
        assert_eq!(super::unescape(r"/tail\04"), r"/tail\04");
        assert_eq!(super::unescape("/plain"), "/plain");
    }
}
