//! Reading Prometheus' text exposition format, one sample line at a time: what a process
//! that scrapes a memguard-instrumented service (a load generator, a rollout controller)
//! needs, without a full parser. Pure.

/// A sample line's metric name and value; `None` for comments, blank and malformed lines and
/// non-finite values.
pub fn sample(line: &str) -> Option<(&str, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(line.len());
    let name = &line[..end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut rest = &line[end..];
    if rest.starts_with('{') {
        rest = after_labels(rest)?;
    }
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let v: f64 = rest.split_whitespace().next()?.parse().ok()?;
    v.is_finite().then_some((name, v))
}

/// What follows the label set `{...}` that `s` starts with (quotes and escapes respected).
fn after_labels(s: &str) -> Option<&str> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in s.char_indices().skip(1) {
        if quoted {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
        } else if c == '"' {
            quoted = true;
        } else if c == '}' {
            return Some(&s[i + 1..]);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::sample;

    #[test]
    fn reads_names_values_and_skips_what_is_not_a_sample() {
        assert_eq!(sample("process_resident_memory_bytes 123"), Some(("process_resident_memory_bytes", 123.0)));
        assert_eq!(sample(r#"http_requests_total{route="/a b}",status="200"} 7 1700000000000"#), Some(("http_requests_total", 7.0)));
        assert_eq!(sample(r#"x{l="say "hi""} 2"#), Some(("x", 2.0)));
        for bad in ["# HELP x y", "", "x NaN", "x +Inf", "x{l=\"1\" 2", "9x 1", "x", "x{} abc"] {
            assert_eq!(sample(bad), None, "{bad}");
        }
    }
}
