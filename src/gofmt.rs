//! Go's text formats, where kelp must print as upstream's Go code does
//! (klog lines, kubectl columns, Pod Security messages, protobuf durations):
//! `strconv.Quote`, `%v` and `encoding/json` floats, `time.Duration.String()`.
//! A leaf: it imports nothing of kelp's.

use std::fmt::Write as _;

/// Go's `strconv.Quote` (`%q`) of `s`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    quote_into(s, &mut out);
    out
}

/// Go's `strconv.Quote`: a double-quoted literal with `\a \b \f \n \r \t \v`,
/// `\xHH` for other ASCII controls and `\uHHHH`/`\UHHHHHHHH` for other
/// non-printable characters. Unassigned code points count as printable.
pub fn quote_into(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if printable(c) => out.push(c),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
}

/// Go's `unicode.IsPrint` as far as std can tell: not a control, no space but
/// U+0020, not a format character, private-use or non-character code point.
fn printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(
        c as u32,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0xE000..=0xF8FF
            | 0xFDD0..=0xFDEF
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0xFFFE..=0xFFFF
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
            | 0xF0000..=0x10FFFF
    ) && (c as u32 & 0xFFFE) != 0xFFFE
}

/// Go's `%v` for a float64: shortest digits, exponent form (`1e+06`,
/// `1e-05`) below 1e-4 and from 1e6 on.
pub fn float_into(f: f64, out: &mut String) {
    float_with(f, -4..6, 2, out);
}

/// Go's `%v` for a float64 (`fmt.Print`).
pub fn float(f: f64) -> String {
    let mut out = String::new();
    float_into(f, &mut out);
    out
}

/// A float as Go's encoding/json writes it: exponent form below 1e-6 or
/// from 1e21, the exponent without zero padding.
pub fn json_float(f: f64) -> String {
    let mut out = String::new();
    float_with(f, -6..21, 1, &mut out);
    out
}

/// Shortest digits; in exponent form (at least `width` exponent digits)
/// when the decimal exponent is outside `plain`.
fn float_with(f: f64, plain: std::ops::Range<i32>, width: usize, out: &mut String) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    let sci = format!("{f:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        let _ = write!(out, "{f}");
        return;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if f != 0.0 && !plain.contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "{mantissa}e{sign}{:0width$}", exp.unsigned_abs());
    } else {
        let _ = write!(out, "{f}");
    }
}

/// `time.Duration.String()` of Go: "1h0m0s", "1.5s", "300ms", "0s".
pub fn duration(nanos: i64) -> String {
    let mut u = nanos.unsigned_abs();
    let mut out = String::new();
    if u < 1_000_000_000 {
        let (precision, unit) = match u {
            0 => return "0s".to_owned(),
            1..1_000 => (0, "ns"),
            1_000..1_000_000 => (3, "µs"),
            _ => (6, "ms"),
        };
        let scale = 10u64.pow(precision);
        out.push_str(&(u / scale).to_string());
        out.push_str(&fraction(u % scale, precision));
        out.push_str(unit);
    } else {
        let frac = fraction(u % 1_000_000_000, 9);
        u /= 1_000_000_000;
        let (hours, minutes, seconds) = (u / 3600, (u / 60) % 60, u % 60);
        if hours > 0 {
            out.push_str(&format!("{hours}h"));
        }
        if hours > 0 || minutes > 0 {
            out.push_str(&format!("{minutes}m"));
        }
        out.push_str(&format!("{seconds}{frac}s"));
    }
    if nanos < 0 {
        out.insert(0, '-');
    }
    out
}

/// A fraction of `precision` digits without trailing zeros, "" when zero (Go's `fmtFrac`).
fn fraction(value: u64, precision: u32) -> String {
    if value == 0 {
        return String::new();
    }
    let digits = format!("{value:0width$}", width = precision as usize);
    format!(".{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(s: &str) -> String {
        quote(s)
    }

    #[test]
    fn go_quote_matches_strconv_quote() {
        assert_eq!(quoted("plain"), r#""plain""#);
        assert_eq!(quoted(r#"say "hi" \ bye"#), r#""say \"hi\" \\ bye""#);
        assert_eq!(quoted("\x07\x08\x0c\n\r\t\x0b"), r#""\a\b\f\n\r\t\v""#);
        assert_eq!(quoted("\x00\x1b\x7f"), r#""\x00\x1b\x7f""#);
        assert_eq!(quoted("héllo 世界 🦀"), "\"héllo 世界 🦀\"");
        assert_eq!(quoted("\u{a0}\u{200b}\u{feff}"), r#""\u00a0\u200b\ufeff""#);
        assert_eq!(quoted("\u{85}"), r#""\u0085""#);
        assert_eq!(quoted("\u{e0001}\u{10fffd}"), r#""\U000e0001\U0010fffd""#);
    }

    #[test]
    fn go_float_matches_percent_v() {
        assert_eq!(float(0.25), "0.25");
        assert_eq!(float(3.0), "3");
        assert_eq!(float(0.0), "0");
        assert_eq!(float(-0.0), "-0");
        assert_eq!(float(123456.0), "123456");
        assert_eq!(float(1e6), "1e+06");
        assert_eq!(float(1234567.0), "1.234567e+06");
        assert_eq!(float(-2.5e21), "-2.5e+21");
        assert_eq!(float(1e100), "1e+100");
        assert_eq!(float(0.0001), "0.0001");
        assert_eq!(float(0.00001), "1e-05");
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn go_durations() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (300_000_000, "300ms"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_000_000_001, "1h2m3.000000001s"),
            (-2_000_000_000, "-2s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ];
        for (nanos, expected) in cases {
            assert_eq!(duration(nanos), expected, "{nanos}");
        }
    }

    #[test]
    fn json_floats_as_encoding_json() {
        assert_eq!(json_float(1e-7), "1e-7");
        assert_eq!(json_float(1e21), "1e+21");
        assert_eq!(json_float(123456789.0), "123456789");
        assert_eq!(json_float(0.5), "0.5");
    }

    #[test]
    fn quote_escapes_controls_and_odd_spaces() {
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quote("x\ny\u{1}\u{7f}"), r#""x\ny\x01\x7f""#);
        assert_eq!(quote("é\u{a0}"), "\"é\\u00a0\"");
    }
}
