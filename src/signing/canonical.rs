//! The canonical form of a JSON document: the bytes Python's `json.dumps(v, sort_keys=True)`
//! writes (sorted keys, `", "` / `": "` separators, ASCII escapes with lower-case hex, Python's
//! float repr). We sign and send exactly these bytes; [`is_canonical`] tells, in one pass without
//! allocating, whether received bytes are already in this form, so a verifier that failed on the
//! raw bytes only re-serialises when doing so could change them.

use serde_json::Value;

/// Serialises `v` exactly as Python's `json.dumps(v, sort_keys=True)` does.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::with_capacity(128);
    write_value(&mut out, v);
    out
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (None, Some(u), _) => out.push_str(&u.to_string()),
            (_, _, Some(f)) => out.push_str(&python_float_repr(f)),
            _ => out.push_str("null"),
        },
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(out, k);
                out.push_str(": ");
                write_value(out, &map[k]);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    // Runs of printable ASCII other than `"` and `\\` are copied as they are, in one go.
    let mut rest = s;
    while let Some(at) = rest
        .bytes()
        .position(|b| !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\')
    {
        out.push_str(&rest[..at]);
        let Some(ch) = rest[at..].chars().next() else {
            break;
        };
        rest = &rest[at + ch.len_utf8()..];
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.push_str("\\u");
                    for shift in [12, 8, 4, 0] {
                        out.push(char::from(HEX[usize::from((*unit >> shift) & 0xf)]));
                    }
                }
            }
        }
    }
    out.push_str(rest);
    out.push('"');
}

/// Python's `repr(float)`: the shortest digits that round-trip, in fixed notation when the
/// decimal exponent is in -4..16, else scientific with a signed two-digit exponent.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits ("-1.2345e-7", "1e16", "0e0"), but when
    // two shortest candidates are equally near it may round up where Python rounds half to even
    // (2**49 + 0.25: "...312.3" against Python's "...312.2"). Re-rounding the exact value to that
    // many digits (Rust's fixed-precision formatting is exact and half-even) agrees with Python.
    let shortest = format!("{f:e}");
    let digits = shortest
        .split('e')
        .next()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_digit)
        .count();
    let exact = format!("{:.*e}", digits.saturating_sub(1), f);
    let sci = if exact.parse::<f64>().ok() == Some(f) {
        exact
    } else {
        shortest
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::from(sign);
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let point = exp as usize + 1;
            if digits.len() <= point {
                out.push_str(&digits);
                out.push_str(&"0".repeat(point - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        } else {
            out.push_str("0.");
            out.push_str(&"0".repeat((-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push_str(&format!(
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        ));
    }
    out
}

/// Whether `body` is a JSON document already in canonical form: `Some(true)` when it is,
/// `Some(false)` when it is not (or is not JSON), `None` when this pass cannot tell (an object
/// key with escapes, whose order is that of its decoded text, or nesting deeper than 128).
pub fn is_canonical(body: &[u8]) -> Option<bool> {
    let mut c = Checker { s: body, i: 0 };
    match c.value(0) {
        Ok(()) if c.i == body.len() => Some(true),
        Ok(()) | Err(Verdict::No) => Some(false),
        Err(Verdict::Unknown) => None,
    }
}

enum Verdict {
    No,
    Unknown,
}

struct Checker<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Checker<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, lit: &[u8]) -> Result<(), Verdict> {
        if self.s[self.i..].starts_with(lit) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(Verdict::No)
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), Verdict> {
        if depth > 128 {
            return Err(Verdict::Unknown);
        }
        match self.peek().ok_or(Verdict::No)? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string().map(|_| ()),
            b't' => self.eat(b"true"),
            b'f' => self.eat(b"false"),
            b'n' => self.eat(b"null"),
            b'N' => self.eat(b"NaN"),
            b'I' => self.eat(b"Infinity"),
            b'-' if self.s[self.i..].starts_with(b"-Infinity") => self.eat(b"-Infinity"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(Verdict::No),
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), Verdict> {
        self.i += 1;
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        let mut previous: Option<&'a [u8]> = None;
        loop {
            let key = self.string()?;
            // Python orders keys by code point; without escapes that is the order of the bytes.
            if key.contains(&b'\\') {
                return Err(Verdict::Unknown);
            }
            if previous.is_some_and(|p| p >= key) {
                return Err(Verdict::No);
            }
            previous = Some(key);
            self.eat(b": ")?;
            self.value(depth + 1)?;
            match self.peek() {
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b',') => self.eat(b", ")?,
                _ => return Err(Verdict::No),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), Verdict> {
        self.i += 1;
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.value(depth + 1)?;
            match self.peek() {
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b',') => self.eat(b", ")?,
                _ => return Err(Verdict::No),
            }
        }
    }

    /// A string in canonical form; returns its bytes between the quotes.
    fn string(&mut self) -> Result<&'a [u8], Verdict> {
        let s: &'a [u8] = self.s;
        if self.peek() != Some(b'"') {
            return Err(Verdict::No);
        }
        self.i += 1;
        let start = self.i;
        loop {
            let b = *self.s.get(self.i).ok_or(Verdict::No)?;
            match b {
                b'"' => {
                    let inner = &s[start..self.i];
                    self.i += 1;
                    return Ok(inner);
                }
                b'\\' => {
                    let e = *self.s.get(self.i + 1).ok_or(Verdict::No)?;
                    match e {
                        b'"' | b'\\' | b'n' | b'r' | b't' | b'b' | b'f' => self.i += 2,
                        b'u' => {
                            let hex = self.s.get(self.i + 2..self.i + 6).ok_or(Verdict::No)?;
                            let mut cp = 0u32;
                            for &h in hex {
                                let d = match h {
                                    b'0'..=b'9' => h - b'0',
                                    b'a'..=b'f' => h - b'a' + 10,
                                    _ => return Err(Verdict::No),
                                };
                                cp = cp << 4 | u32::from(d);
                            }
                            // Printable ASCII is written as is, and these five have short escapes.
                            if (0x20..0x7f).contains(&cp)
                                || matches!(cp, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d)
                            {
                                return Err(Verdict::No);
                            }
                            self.i += 6;
                        }
                        _ => return Err(Verdict::No),
                    }
                }
                0x20..=0x7e => self.i += 1,
                _ => return Err(Verdict::No),
            }
        }
    }

    fn number(&mut self) -> Result<(), Verdict> {
        let start = self.i;
        while let Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        let token = &self.s[start..self.i];
        let digits = token.strip_prefix(b"-").unwrap_or(token);
        if digits.iter().all(u8::is_ascii_digit) {
            // Python keeps integers exact: canonical unless a leading zero, "-0" or no digit.
            let ok = !digits.is_empty() && (digits == b"0" || digits[0] != b'0') && token != b"-0";
            return if ok { Ok(()) } else { Err(Verdict::No) };
        }
        let text = std::str::from_utf8(token).map_err(|_| Verdict::No)?;
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() && python_float_repr(f) == text => Ok(()),
            _ => Err(Verdict::No),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_matches_python() {
        let v = json!({"b": [1, 2.5, null, true], "a": "é\u{1F600}\n\"\u{7f}", "c": {"z": 1e-5, "y": 1e16, "x": 0.1}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a": "\u00e9\ud83d\ude00\n\"\u007f", "b": [1, 2.5, null, true], "c": {"x": 0.1, "y": 1e+16, "z": 1e-05}}"#
        );
    }

    #[test]
    fn float_repr_like_python() {
        for (f, s) in [
            (1.0, "1.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (100.0, "100.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (123456.789, "123456.789"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (2f64.powi(49) + 0.25, "562949953421312.2"),
        ] {
            assert_eq!(python_float_repr(f), s, "{f}");
        }
    }

    #[test]
    fn canonical_bodies_are_recognised() {
        for v in [
            json!({"b": [1, 2.5, null, true, false], "a": "\u{e9}\u{1F600}\n\"\u{7f}\u{1}", "c": {"z": 1e-5, "y": 1e16}}),
            json!([]),
            json!({}),
            json!("text"),
            json!(-12),
            json!({"k": [[], {}, [{"x": -0.5}]]}),
        ] {
            let text = canonical_json(&v);
            assert_eq!(is_canonical(text.as_bytes()), Some(true), "{text}");
        }
    }

    #[test]
    fn other_forms_are_not() {
        for text in [
            r#"{"a":1}"#,
            r#"{"b": 1, "a": 2}"#,
            r#"{"a": 1, "a": 2}"#,
            r#"{"a": 1.50}"#,
            r#"{"a": 1E16}"#,
            r#"{"a": 01}"#,
            r#"-0"#,
            r#"{"a": "\u0041"}"#,
            r#"{"a": "\u00E9"}"#,
            r#"{"a": "\/"}"#,
            "{\"a\": \"\u{e9}\"}",
            r#"{"a": 1} "#,
            r#"[1 , 2]"#,
            r#"{"a": 1"#,
            r#""#,
        ] {
            assert_eq!(is_canonical(text.as_bytes()), Some(false), "{text}");
        }
        assert_eq!(is_canonical(br#"{"\u00e9": 1}"#), None);
    }
}
