//! Seats per priority level: nominal limits from the server's total and
//! the levels' shares, and the periodic re-allocation that lets busy levels
//! borrow what idle ones lend (upstream's `conc_alloc` and the borrowing
//! adjustment of apf_controller).

/// One level's fixed limits, from its spec and the server's total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// NominalCL = ceil(total × shares / Σ shares).
    pub nominal: u32,
    /// Seats it may lend: round(nominal × lendablePercent / 100).
    pub lendable: u32,
    /// Seats it may borrow: round(nominal × borrowingLimitPercent / 100), or the total.
    pub borrowing: u32,
}

impl Limits {
    /// The least it may be left with.
    pub fn min(&self) -> u32 {
        self.nominal - self.lendable
    }

    /// The most it may reach.
    pub fn max(&self) -> u32 {
        self.nominal + self.borrowing
    }

    /// Its limit when first created: nominal less half of what it may lend.
    pub fn initial(&self) -> u32 {
        self.nominal - self.lendable / 2
    }
}

/// A level's share of the total, as its spec says.
#[derive(Debug, Clone, Copy)]
pub struct Share {
    /// `nominalConcurrencyShares`.
    pub shares: u32,
    /// `lendablePercent`.
    pub lendable_percent: u32,
    /// `borrowingLimitPercent`; None: no limit (the total).
    pub borrowing_limit_percent: Option<u32>,
    /// Whether the level is exempt (borrowing limit is always the total).
    pub exempt: bool,
}

/// Each level's limits out of `total` seats (`--max-requests-inflight` +
/// `--max-mutating-requests-inflight`).
pub fn limits(total: u32, shares: &[Share]) -> Vec<Limits> {
    let sum: u64 = shares.iter().map(|s| u64::from(s.shares)).sum();
    shares
        .iter()
        .map(|s| {
            let nominal = if sum == 0 {
                0
            } else {
                (u64::from(total) * u64::from(s.shares)).div_ceil(sum) as u32
            };
            let lendable = round(f64::from(nominal) * f64::from(s.lendable_percent) / 100.0);
            let borrowing = match s.borrowing_limit_percent {
                Some(p) if !s.exempt => round(f64::from(nominal) * f64::from(p) / 100.0),
                _ => total,
            };
            Limits {
                nominal,
                lendable: lendable.min(nominal),
                borrowing,
            }
        })
        .collect()
}

/// Go's math.Round (half away from zero) of a non-negative value.
fn round(x: f64) -> u32 {
    x.round().max(0.0) as u32
}

/// The widest request a queued level admits: 15 % of its nominal seats,
/// at most its seats per hand, at least 1, and never above 10.
pub fn max_seats(nominal: u32, hand_size: usize) -> u32 {
    let by_share = (0.15 * f64::from(nominal)).ceil() as u32;
    let by_hand = nominal / hand_size.max(1) as u32;
    by_share.min(by_hand).clamp(1, 10)
}

/// One level's bounds and wish in a re-allocation.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    /// Lower bound.
    pub lower: f64,
    /// Upper bound.
    pub upper: f64,
    /// What it would like (its smoothed demand).
    pub target: f64,
}

/// Splits `total` seats so each level gets `clamp(lower, upper, p × target)`
/// for one fair proportion `p` (upstream's computeConcurrencyAllocation),
/// rounded. Returns the allocations and `p`.
pub fn allocate(total: f64, claims: &[Claim]) -> (Vec<u32>, f64) {
    let lower_sum: f64 = claims.iter().map(|c| c.lower).sum();
    let upper_sum: f64 = claims.iter().map(|c| c.upper).sum();
    if total <= lower_sum {
        return (claims.iter().map(|c| round(c.lower)).collect(), 0.0);
    }
    if total >= upper_sum {
        return (
            claims.iter().map(|c| round(c.upper)).collect(),
            f64::INFINITY,
        );
    }
    let given = |p: f64| -> f64 {
        claims
            .iter()
            .map(|c| (p * c.target.max(0.001)).clamp(c.lower, c.upper))
            .sum()
    };
    // given(p) grows with p: bisect for given(p) = total.
    let (mut low, mut high) = (0.0_f64, 1.0_f64);
    while given(high) < total && high < 1e12 {
        high *= 2.0;
    }
    for _ in 0..100 {
        let mid = (low + high) / 2.0;
        if given(mid) < total {
            low = mid;
        } else {
            high = mid;
        }
    }
    let p = (low + high) / 2.0;
    let allocations = claims
        .iter()
        .map(|c| round((p * c.target.max(0.001)).clamp(c.lower, c.upper)))
        .collect();
    (allocations, p)
}

/// A level's demand smoothed over periods: rises at once, decays slowly.
pub fn smooth(previous: f64, average: f64, stddev: f64) -> f64 {
    let envelope = average + stddev;
    envelope.max(0.977 * previous + 0.023 * envelope)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(shares: u32, lendable_percent: u32) -> Share {
        Share {
            shares,
            lendable_percent,
            borrowing_limit_percent: None,
            exempt: false,
        }
    }

    #[test]
    fn bootstrap_levels_at_600_seats() {
        // catch-all, system, node-high, leader-election, workload-high, workload-low, global-default, exempt
        let mut shares = vec![
            share(5, 0),
            share(30, 33),
            share(40, 25),
            share(10, 0),
            share(40, 50),
            share(100, 90),
            share(20, 50),
        ];
        shares.push(Share {
            exempt: true,
            ..share(0, 0)
        });
        let l = limits(600, &shares);
        let nominal: Vec<u32> = l.iter().map(|l| l.nominal).collect();
        assert_eq!(nominal, vec![13, 74, 98, 25, 98, 245, 49, 0]);
        let min: Vec<u32> = l.iter().map(Limits::min).collect();
        assert_eq!(min, vec![13, 50, 73, 25, 49, 24, 24, 0]);
        assert_eq!(l[1].max(), 74 + 600);
    }

    #[test]
    fn max_seats_as_upstream() {
        assert_eq!(max_seats(74, 6), 10);
        assert_eq!(max_seats(25, 4), 4);
        assert_eq!(max_seats(49, 6), 8);
        assert_eq!(max_seats(3, 6), 1);
    }

    #[test]
    fn allocation_gives_the_busy_level_what_the_idle_one_lends() {
        let claims = [
            Claim {
                lower: 10.0,
                upper: 100.0,
                target: 80.0,
            },
            Claim {
                lower: 5.0,
                upper: 100.0,
                target: 0.0,
            },
        ];
        let (a, _) = allocate(60.0, &claims);
        assert_eq!(a.iter().sum::<u32>(), 60);
        assert_eq!(a[1], 5);
        // Everyone at the floor when there is too little.
        let (a, _) = allocate(10.0, &claims);
        assert_eq!(a, vec![10, 5]);
    }

    #[test]
    fn smoothing_rises_fast_and_falls_slowly() {
        assert_eq!(smooth(0.0, 10.0, 2.0), 12.0);
        let after = smooth(12.0, 0.0, 0.0);
        assert!(after > 11.0 && after < 12.0);
    }
}
