//! Resource quantities (`100m`, `64Mi`, `1.5G`, `2e3`), exactly: a
//! [`Quantity`] holds its value in billionths (upstream's smallest scale,
//! `n`), so `0.1` plus `0.2` is `300m` and a byte count never passes
//! through a float. Read by cgroup limits, the downward API, the
//! scheduler, quota, limit ranges and the autoscaler; printed in
//! upstream's canonical form by [`format_milli`].

/// A parsed quantity: its value in billionths of a base unit (cores,
/// bytes). Precision below a billionth is rounded up, as upstream rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Quantity {
    nanos: i128,
}

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not `<number><suffix>` as upstream defines them.
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Format,
    /// Too large to hold.
    #[error("quantity is too large")]
    TooLarge,
}

const NANOS: i128 = 1_000_000_000;

impl Quantity {
    /// Parses `q` (`250m`, `1.5Gi`, `-2e3`, `.5`).
    pub fn parse(q: &str) -> Result<Self, QuantityError> {
        let q = q.trim();
        let split = q
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(q.len());
        let (number, suffix) = q.split_at(split);
        let (negative, digits) = match number.as_bytes().first() {
            Some(b'-') => (true, &number[1..]),
            Some(b'+') => (false, &number[1..]),
            _ => (false, number),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.len() + fraction.len() == 0 || !all_digits(whole) || !all_digits(fraction) {
            return Err(QuantityError::Format);
        }
        // The number as an integer with a decimal exponent: 1.25 = 125e-2.
        let mantissa: String = whole.chars().chain(fraction.chars()).collect();
        let mantissa = mantissa.trim_start_matches('0');
        if mantissa.len() > 36 {
            return Err(QuantityError::TooLarge);
        }
        let mantissa: i128 = if mantissa.is_empty() {
            0
        } else {
            mantissa.parse().map_err(|_| QuantityError::TooLarge)?
        };
        let mut exponent = -(fraction.len() as i32);
        let mut binary: u32 = 0;
        match suffix {
            "" => {}
            "n" => exponent -= 9,
            "u" => exponent -= 6,
            "m" => exponent -= 3,
            "k" => exponent += 3,
            "M" => exponent += 6,
            "G" => exponent += 9,
            "T" => exponent += 12,
            "P" => exponent += 15,
            "E" => exponent += 18,
            "Ki" => binary = 10,
            "Mi" => binary = 20,
            "Gi" => binary = 30,
            "Ti" => binary = 40,
            "Pi" => binary = 50,
            "Ei" => binary = 60,
            s if s.starts_with(['e', 'E']) => {
                let power: i32 = s[1..].parse().map_err(|_| QuantityError::Format)?;
                exponent = exponent.checked_add(power).ok_or(QuantityError::TooLarge)?;
            }
            _ => return Err(QuantityError::Format),
        }
        // Billionths: mantissa × 2^binary × 10^(exponent + 9), rounded up.
        let scaled = mantissa
            .checked_mul(1i128 << binary)
            .ok_or(QuantityError::TooLarge)?;
        let exponent = exponent + 9;
        let nanos = if exponent >= 0 {
            10i128
                .checked_pow(exponent as u32)
                .and_then(|f| scaled.checked_mul(f))
                .ok_or(QuantityError::TooLarge)?
        } else if -exponent > 38 {
            i128::from(scaled > 0)
        } else {
            let divisor = 10i128.pow((-exponent) as u32);
            scaled / divisor + i128::from(scaled % divisor != 0)
        };
        Ok(Self {
            nanos: if negative { -nanos } else { nanos },
        })
    }

    /// A quantity of `milli` thousandths.
    pub fn from_milli(milli: i64) -> Self {
        Self {
            nanos: i128::from(milli) * 1_000_000,
        }
    }

    /// The value in thousandths, rounded up (upstream's `MilliValue`).
    pub fn milli(&self) -> i64 {
        saturate(
            self.nanos.div_euclid(1_000_000) + i128::from(self.nanos.rem_euclid(1_000_000) != 0),
        )
    }

    /// The value in whole units, rounded up (upstream's `Value`).
    pub fn value(&self) -> i64 {
        saturate(self.nanos.div_euclid(NANOS) + i128::from(self.nanos.rem_euclid(NANOS) != 0))
    }

    /// The value as a float (for ratios: the autoscaler's, limit ranges').
    pub fn as_f64(&self) -> f64 {
        self.nanos as f64 / NANOS as f64
    }
}

fn saturate(n: i128) -> i64 {
    n.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl std::ops::Add for Quantity {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            nanos: self.nanos.saturating_add(other.nanos),
        }
    }
}

/// The value of a quantity in base units (cores, bytes) as a float, or
/// None if malformed.
pub fn parse(q: &str) -> Option<f64> {
    Quantity::parse(q).ok().map(|q| q.as_f64())
}

/// The value in whole units (bytes), rounded up, or None if malformed.
pub fn value(q: &str) -> Option<i64> {
    Quantity::parse(q).ok().map(|q| q.value())
}

/// The value in thousandths (millicores), rounded up as upstream does.
pub fn milli(q: &str) -> Option<i64> {
    Quantity::parse(q).ok().map(|q| q.milli())
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
    fn quantities_are_exact_to_a_billionth_and_round_up_below() {
        let q = |s: &str| Quantity::parse(s).unwrap();
        // Decimal fractions stay exact: no float on the way.
        assert_eq!((q("0.1") + q("0.2")).milli(), 300);
        assert_eq!(q("0.1") + q("0.2"), q("300m"));
        assert_eq!(q("1.1Gi").value(), 1_181_116_007); // 1.1 × 2^30, rounded up
        assert_eq!(q("7Ei").value(), 7 << 60);
        assert_eq!(q("8Ei").value(), i64::MAX, "saturates");
        assert_eq!(q("123456789n").milli(), 124);
        assert_eq!(q("1n").value(), 1);
        assert_eq!(q("-1500m").milli(), -1500);
        assert_eq!(q("-1500m").value(), -1);
        assert_eq!(q(".5").milli(), 500);
        assert_eq!(q("5.").value(), 5);
        assert_eq!(q("1.5e3").value(), 1500);
        assert_eq!(q("2E-3").milli(), 2);
        // Below a billionth rounds up to one.
        assert_eq!(q("1e-12"), q("1n"));
        assert_eq!(q("0"), Quantity::default());
        assert_eq!(Quantity::from_milli(250), q("250m"));
        assert!(q("1Gi") > q("1G"));
        for bad in ["", ".", "1.2.3", "--1", "1Q", "1e", "1ee3", "Mi", "1 Mi"] {
            assert_eq!(Quantity::parse(bad), Err(QuantityError::Format), "{bad:?}");
        }
        assert_eq!(Quantity::parse("1e40"), Err(QuantityError::TooLarge));
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
