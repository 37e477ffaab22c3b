//! Resource quantities (`100m`, `64Mi`, `1.5G`, `2e3`): parsed to numbers
//! for cgroup limits, the downward API and, later, scheduling.

/// The value of a quantity in base units (cores, bytes), or None if malformed.
pub fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

/// The value in thousandths (millicores), rounded up as upstream does.
pub fn milli(q: &str) -> Option<i64> {
    parse(q).map(|v| (v * 1000.0 - 1e-9).ceil() as i64)
}

/// How a quantity's whole units are suffixed (upstream's formats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suffixes {
    /// `k`, `M`, `G`, … (`DecimalSI`).
    Decimal,
    /// `Ki`, `Mi`, `Gi`, `Ti` (`BinarySI`: memory and storage).
    Binary,
}

/// A quantity of thousandths as upstream prints it in canonical form:
/// `250m` when not whole, else whole units with the largest exact suffix
/// (`2`, `2M`, `128Mi`).
pub fn format_milli(milli: i64, suffixes: Suffixes) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let units = milli / 1000;
    if units == 0 {
        return "0".into();
    }
    let steps: &[(&str, i64)] = match suffixes {
        Suffixes::Decimal => &[
            ("E", 1_000_000_000_000_000_000),
            ("P", 1_000_000_000_000_000),
            ("T", 1_000_000_000_000),
            ("G", 1_000_000_000),
            ("M", 1_000_000),
            ("k", 1_000),
        ],
        Suffixes::Binary => &[
            ("Ti", 1 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ],
    };
    steps
        .iter()
        .find(|(_, size)| units % size == 0)
        .map(|(suffix, size)| format!("{}{suffix}", units / size))
        .unwrap_or_else(|| units.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_print_with_the_largest_exact_suffix() {
        use Suffixes::*;
        assert_eq!(format_milli(0, Decimal), "0");
        assert_eq!(format_milli(250, Decimal), "250m");
        assert_eq!(format_milli(1500, Decimal), "1500m");
        assert_eq!(format_milli(2000, Decimal), "2");
        assert_eq!(format_milli(1_245_184_000, Decimal), "1245184");
        assert_eq!(format_milli(2_000_000_000, Decimal), "2M");
        assert_eq!(format_milli(128 * 1024 * 1024 * 1000, Binary), "128Mi");
        assert_eq!(format_milli(1500, Binary), "1500m");
        assert_eq!(format_milli(3000, Binary), "3");
    }

    #[test]
    fn suffixes_scale_as_kubernetes_defines_them() {
        assert_eq!(parse("64Mi"), Some(67_108_864.0));
        assert_eq!(parse("1G"), Some(1e9));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(milli("100m"), Some(100));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("0.0001"), Some(1));
        assert_eq!(parse("12Qi"), None);
        assert_eq!(parse("abc"), None);
    }
}
