//! Human units for the table and the HTML report: durations (us/ms/s), bytes (KiB/MiB/GiB),
//! counts with thousands separators, percentages. An undefined value (NaN) shows as `-`.
//!
//! Figures keep three significant digits (`850 us`, `1.25 ms`, `12.5 s`) so a column reads at a
//! glance; the `_tick` variants drop trailing zeros for axis labels (`1 ms`, not `1.00 ms`).

/// What an undefined figure (NaN, or a ratio over nothing) shows as.
pub const NONE: &str = "-";

/// A duration given in microseconds: `850 us`, `1.25 ms`, `3.40 s`.
pub fn duration_us(us: f64) -> String {
    duration(us, false)
}

/// [`duration_us`] for an axis tick: `500 us`, `1 ms`, `2.5 s`.
pub fn duration_us_tick(us: f64) -> String {
    duration(us, true)
}

fn duration(us: f64, trim: bool) -> String {
    if !us.is_finite() {
        return NONE.to_owned();
    }
    if us == 0.0 && trim {
        return "0".to_owned();
    }
    let (value, unit) = scale(us, 1_000.0, &["us", "ms", "s"]);
    format!("{} {unit}", sig3(value, trim))
}

/// A byte count in binary units: `512 B`, `1.50 KiB`, `3.25 GiB`.
pub fn bytes(bytes: u64) -> String {
    bytes_f64(bytes as f64, false)
}

/// [`bytes`] for an axis tick.
pub fn bytes_tick(bytes: f64) -> String {
    bytes_f64(bytes, true)
}

fn bytes_f64(bytes: f64, trim: bool) -> String {
    if !bytes.is_finite() {
        return NONE.to_owned();
    }
    if bytes.abs() < 1024.0 {
        return format!("{bytes:.0} B");
    }
    let (value, unit) = scale(bytes, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB", "PiB"]);
    format!("{} {unit}", sig3(value, trim))
}

/// A simulated span in seconds, in the largest unit that keeps it readable: `45 s`, `12.5 min`,
/// `8.00 h`, `14.0 d`.
pub fn span_s(seconds: f64) -> String {
    if !seconds.is_finite() {
        return NONE.to_owned();
    }
    let a = seconds.abs();
    if a < 120.0 {
        format!("{} s", sig3(seconds, true))
    } else if a < 7_200.0 {
        format!("{} min", sig3(seconds / 60.0, true))
    } else if a < 172_800.0 {
        format!("{} h", sig3(seconds / 3_600.0, true))
    } else {
        format!("{} d", sig3(seconds / 86_400.0, true))
    }
}

/// A count with thousands separators: `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A non-negative quantity with thousands separators and `decimals` decimals: `12,345.6`.
pub fn fixed(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return NONE.to_owned();
    }
    let text = format!("{:.*}", decimals, v.abs());
    let (int, frac) = text
        .split_once('.')
        .map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
    let mut out = String::new();
    if v < 0.0 && text.chars().any(|c| c.is_ascii_digit() && c != '0') {
        out.push('-');
    }
    out.push_str(&int.parse::<u64>().map_or_else(|_| int.to_owned(), count));
    if let Some(frac) = frac {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// A value with an SI suffix for axes and cards: `950`, `12.5k`, `3.4M`.
pub fn si(v: f64) -> String {
    if !v.is_finite() {
        return NONE.to_owned();
    }
    if v.abs() < 1_000.0 {
        return sig3(v, true);
    }
    let (value, unit) = scale(v, 1_000.0, &["", "k", "M", "G", "T"]);
    format!("{}{unit}", sig3(value, true))
}

/// A ratio (0..1) as a percentage with one decimal: `12.3%`.
pub fn pct(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{:.1}%", ratio * 100.0)
    } else {
        NONE.to_owned()
    }
}

/// A ratio as a signed percentage: `+3.2%`, `-0.8%`.
pub fn signed_pct(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{:+.1}%", ratio * 100.0)
    } else {
        NONE.to_owned()
    }
}

/// A load multiplier: `0.5x`, `1x`, `2.25x`.
pub fn load(load: f64) -> String {
    if !load.is_finite() {
        return NONE.to_owned();
    }
    format!("{}x", trim_zeros(&format!("{load:.3}")))
}

/// Divides `v` by `step` until it is below `step`, naming the unit it lands in. A value that
/// would print as `1000` after rounding to three digits moves up a unit (`999.7 us` -> `1.00 ms`).
fn scale<'a>(v: f64, step: f64, units: &[&'a str]) -> (f64, &'a str) {
    let mut value = v;
    let mut i = 0;
    while value.abs() >= step - 0.5 && i + 1 < units.len() {
        value /= step;
        i += 1;
    }
    (value, units[i])
}

/// Three significant digits (more for large values: `1250`); with `trim`, no trailing zeros.
fn sig3(v: f64, trim: bool) -> String {
    let a = v.abs();
    let text = if a == 0.0 {
        "0".to_owned()
    } else if a < 0.01 {
        format!("{v:.2e}")
    } else if a < 9.995 {
        format!("{v:.2}")
    } else if a < 99.95 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    };
    if trim { trim_zeros(&text) } else { text }
}

/// `1.50` -> `1.5`, `2.00` -> `2`; leaves integers and exponents alone.
fn trim_zeros(text: &str) -> String {
    if !text.contains('.') || text.contains('e') {
        return text.to_owned();
    }
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_pick_the_unit_that_keeps_three_digits() {
        let cases = [
            (0.0, "0 us"),
            (850.0, "850 us"),
            (999.7, "1.00 ms"), // rounds to 1000 us: promoted
            (1_250.0, "1.25 ms"),
            (12_500.0, "12.5 ms"),
            (3_400_000.0, "3.40 s"),
            (1_250_000_000.0, "1250 s"), // seconds is the largest unit
            (f64::NAN, "-"),
        ];
        for (us, want) in cases {
            assert_eq!(duration_us(us), want, "{us} us");
        }
        assert_eq!(duration_us_tick(1_000.0), "1 ms");
        assert_eq!(duration_us_tick(2_500_000.0), "2.5 s");
    }

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1_536), "1.50 KiB"); // 1536 / 1024
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.00 GiB");
        assert_eq!(bytes_tick(1024.0 * 1024.0), "1 MiB");
    }

    #[test]
    fn counts_and_fixed_group_thousands() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(fixed(12_345.67, 1), "12,345.7");
        assert_eq!(fixed(-1_500.0, 0), "-1,500");
        assert_eq!(fixed(-0.01, 1), "0.0"); // no negative zero
    }

    #[test]
    fn ratios_loads_and_si() {
        assert_eq!(pct(0.1234), "12.3%");
        assert_eq!(signed_pct(0.032), "+3.2%");
        assert_eq!(signed_pct(-0.008), "-0.8%");
        assert_eq!(pct(f64::NAN), "-");
        assert_eq!(load(0.5), "0.5x");
        assert_eq!(load(1.0), "1x");
        assert_eq!(load(0.1 + 0.2), "0.3x");
        assert_eq!(si(950.0), "950");
        assert_eq!(si(12_500.0), "12.5k");
        assert_eq!(si(3_400_000.0), "3.4M");
        assert_eq!(span_s(86_400.0), "24 h");
        assert_eq!(span_s(1_209_600.0), "14 d");
    }
}
