//! The pieces of the hand-written SVG of `kdet report`: escaping, "nice" tick numbers
//! (1, 2 or 5 times a power of ten; Heckbert, Graphics Gems 1990), the log-scale rule
//! and linear / log-10 scales. The charts are in [`super::chart`].

/// Categorical colours for runs and loss terms: matplotlib's `tab10`, then the light
/// halves of `tab20` (a distillation run logs a dozen terms).
pub const PALETTE: [&str; 20] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
];

/// Text for HTML or SVG: `& < > " '` as entities (safe in element content and in quoted
/// attribute values).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A step giving about `target` intervals over `span`: 1, 2, 5 or 10 times a power of ten.
pub fn nice_step(span: f64, target: usize) -> f64 {
    let raw = span.abs() / target.max(1) as f64;
    if !raw.is_finite() || raw <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction < 1.5 {
        1.0
    } else if fraction < 3.0 {
        2.0
    } else if fraction < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Evenly spaced nice ticks covering `[lo, hi]`: the first is `<= lo`, the last `>= hi`.
/// An empty range is widened (0 to 1 around zero, ±10 % elsewhere).
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let (lo, hi) = match (lo.is_finite(), hi.is_finite()) {
        (true, true) if lo <= hi => (lo, hi),
        (true, true) => (hi, lo),
        _ => (0.0, 1.0),
    };
    let (lo, hi) = if hi - lo <= 1e-12 * hi.abs().max(lo.abs()).max(1e-300) {
        if lo == 0.0 {
            (0.0, 1.0)
        } else {
            let d = lo.abs() * 0.1;
            (lo - d, hi + d)
        }
    } else {
        (lo, hi)
    };
    let step = nice_step(hi - lo, target);
    // The small slack keeps a bound that is a multiple of the step (up to rounding) from
    // adding a whole extra interval.
    let first = (lo / step + 1e-9).floor() as i64;
    let last = (hi / step - 1e-9).ceil() as i64;
    (first..=last.max(first + 1))
        .map(|i| i as f64 * step)
        .collect()
}

/// Log scale when the positive values span more than two decades (max / min > 100).
/// Zeros, negatives and non-finite values do not count.
pub fn wants_log_scale(values: &[f64]) -> bool {
    let positive = values.iter().copied().filter(|v| v.is_finite() && *v > 0.0);
    let (min, max) = positive.fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    max > 0.0 && max / min > 100.0
}

/// The exponents of the powers of ten covering the positive `[lo, hi]` (at least one
/// decade); every second one past 8 decades.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<i32> {
    let lo_exp = lo.log10().floor() as i32;
    let mut hi_exp = hi.log10().ceil() as i32;
    if hi_exp <= lo_exp {
        hi_exp = lo_exp + 1;
    }
    let every = if hi_exp - lo_exp > 8 { 2 } else { 1 };
    let mut exps: Vec<i32> = (lo_exp..=hi_exp).step_by(every).collect();
    if exps.last() != Some(&hi_exp) {
        exps.push(hi_exp);
    }
    exps
}

/// A linear tick label: as many decimals as the step needs, `k` for thousands from 10k.
pub fn format_tick(value: f64, step: f64) -> String {
    let value = if value.abs() < step.abs() * 1e-6 {
        0.0
    } else {
        value
    };
    if step >= 1000.0 && value.abs() >= 10_000.0 && (value / 1000.0).fract().abs() < 1e-9 {
        return format!("{}k", (value / 1000.0).round() as i64);
    }
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10() - 1e-9).ceil().max(0.0) as usize
    };
    format!("{value:.decimals$}")
}

/// The label of the tick `10^exp`: plain digits from 0.0001 to 100000, else `1e<exp>`.
pub fn format_log_tick(exp: i32) -> String {
    match exp {
        -4..=-1 => format!("{:.*}", (-exp) as usize, 10f64.powi(exp)),
        0..=5 => format!("{}", 10i64.pow(exp as u32)),
        _ => format!("1e{exp}"),
    }
}

/// Maps data values on one axis to `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    Linear {
        lo: f64,
        hi: f64,
    },
    /// Bounds as exponents of ten.
    Log {
        lo_exp: f64,
        hi_exp: f64,
    },
}

impl Scale {
    /// Where `v` lies between the bounds (0 at `lo`); `None` for values a log scale cannot
    /// show (zero, negative) and non-finite values.
    pub fn frac(&self, v: f64) -> Option<f64> {
        if !v.is_finite() {
            return None;
        }
        match *self {
            Scale::Linear { lo, hi } => Some((v - lo) / (hi - lo)),
            Scale::Log { lo_exp, hi_exp } => {
                (v > 0.0).then(|| (v.log10() - lo_exp) / (hi_exp - lo_exp))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
    }

    #[test]
    fn nice_ticks_are_1_2_5_steps_covering_the_range() {
        // 0.93 / 5 = 0.186 -> 2 x 0.1.
        let t = nice_ticks(0.0, 0.93, 5);
        assert!(close(&t, &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]), "{t:?}");
        // 2000 / 6 = 333 -> 5 x 100 (3.33 rounds to 5).
        let t = nice_ticks(0.0, 2000.0, 6);
        assert!(close(&t, &[0.0, 500.0, 1000.0, 1500.0, 2000.0]), "{t:?}");
        // A bound on a tick adds no extra interval; negative ranges work.
        let t = nice_ticks(-1.0, 1.0, 4);
        assert!(close(&t, &[-1.0, -0.5, 0.0, 0.5, 1.0]), "{t:?}");
        let t = nice_ticks(3.0, 97.0, 5);
        assert!(close(&t, &[0.0, 20.0, 40.0, 60.0, 80.0, 100.0]), "{t:?}");
    }

    #[test]
    fn nice_ticks_widen_empty_and_invalid_ranges() {
        assert!(close(
            &nice_ticks(0.0, 0.0, 5),
            &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
        ));
        let t = nice_ticks(5.0, 5.0, 5);
        assert!(t[0] <= 4.5 && *t.last().expect("ticks") >= 5.5, "{t:?}");
        assert!(nice_ticks(f64::NAN, 1.0, 5).len() >= 2);
        assert!(close(&nice_ticks(1.0, 0.0, 2), &nice_ticks(0.0, 1.0, 2)));
    }

    #[test]
    fn tick_labels_carry_the_decimals_of_the_step() {
        assert_eq!(format_tick(0.30000000000000004, 0.1), "0.3");
        assert_eq!(format_tick(0.25, 0.05), "0.25");
        assert_eq!(format_tick(1500.0, 500.0), "1500");
        assert_eq!(format_tick(20000.0, 5000.0), "20k");
        assert_eq!(format_tick(-1e-17, 0.2), "0.0");
        assert_eq!(format_log_tick(-3), "0.001");
        assert_eq!(format_log_tick(2), "100");
        assert_eq!(format_log_tick(-7), "1e-7");
    }

    #[test]
    fn log_scale_only_past_two_decades_of_positive_values() {
        assert!(!wants_log_scale(&[1.0, 50.0]));
        assert!(!wants_log_scale(&[1.0, 100.0]));
        assert!(wants_log_scale(&[0.01, 2.0]));
        // Zeros and NaN do not count: 0.5..3 is less than a decade.
        assert!(!wants_log_scale(&[0.0, 0.5, 3.0, f64::NAN]));
        assert!(!wants_log_scale(&[]));
        assert_eq!(log_ticks(0.003, 2.5), vec![-3, -2, -1, 0, 1]);
        assert_eq!(log_ticks(2.0, 3.0), vec![0, 1]);
        assert_eq!(log_ticks(1e-9, 1.0), vec![-9, -7, -5, -3, -1, 0]);
    }

    #[test]
    fn log_scale_drops_values_it_cannot_show() {
        let s = Scale::Log {
            lo_exp: -2.0,
            hi_exp: 0.0,
        };
        assert_eq!(s.frac(0.0), None);
        assert!((s.frac(0.1).expect("positive") - 0.5).abs() < 1e-12);
        let l = Scale::Linear { lo: 0.0, hi: 4.0 };
        assert_eq!(l.frac(1.0), Some(0.25));
        assert_eq!(l.frac(f64::NAN), None);
    }

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("loss_cls"), "loss_cls");
    }
}
