//! URL pieces as Go's `net/url` reads them, for inputs that follow Go's
//! rules: `OTEL_RESOURCE_ATTRIBUTES` values, query parameters.

/// Go's `url.QueryUnescape`: `+` is a space, `%XY` a byte; a `%` not
/// followed by two hex digits is an error.
pub(crate) fn query_unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}
