//! Keep-alive policy names, as scenario files, reports and `sandstorm scheduler --keep-alive`
//! write them.
//!
//! Owns [`KeepAliveSpec`]: its parser, a `Display` that round-trips
//! (`parse(spec.to_string()) == spec`), and the policy it names ([`KeepAliveSpec::policy`]), so
//! the simulator and the live scheduler build the same one from the same text. Durations are a whole number followed by a unit: `us`,
//! `ms`, `s`, `m` or `h` (`90s`, `10m`, `4h`). `Display` writes durations with the scheduler's
//! [`format_duration`] (the largest of `h`, `m`, `s` that divides, else `us`: 60 min is
//! `1h`), so a spec prints exactly as the keep-alive policy it builds names itself in run results.

use std::fmt;
use std::str::FromStr;

use super::{FixedTtl, GreedyDual, HybridHistogram, KeepAlive, format_duration};

/// The hybrid-histogram policy's default range: 4 h (Serverless in the Wild, ATC'20).
pub const DEFAULT_HYBRID_RANGE_US: u64 = 4 * 3_600_000_000;

/// A keep-alive policy, named in scenario files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeepAliveSpec {
    /// `fixed:<duration>`: an idle context is kept this long after its last use.
    Fixed { ttl_us: u64 },
    /// `fixed-lifetime:<duration>`: a context is reclaimed this long after it *first* fell idle,
    /// however often it is reused in between (DSLab FaaS's default fixed policy; the scheduler's
    /// `FixedTtl::lifetime`).
    FixedLifetime { ttl_us: u64 },
    /// `hybrid` or `hybrid:<range>`: the ATC'20 hybrid histogram policy (pre-warm at the 5th
    /// percentile of idle times, keep alive to the 99th) over idle times up to `range_us`
    /// (default [`DEFAULT_HYBRID_RANGE_US`]).
    Hybrid { range_us: u64 },
    /// `greedy-dual`: FaasCache's greedy-dual keep-alive (ASPLOS'21): evict the context with the
    /// lowest priority (clock + frequency x cold-start cost / memory) when memory is needed.
    GreedyDual,
}

const EXPECTED: &str = "expected fixed:<duration>, fixed-lifetime:<duration>, hybrid, \
                        hybrid:<duration> or greedy-dual (durations like 90s, 10m, 4h)";

impl KeepAliveSpec {
    /// Parses a policy name; the error says what was expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (kind, arg) = match text.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (text, None),
        };
        let duration = |arg: Option<&str>| -> Result<u64, String> {
            let arg =
                arg.ok_or_else(|| format!("keep-alive \"{text}\" needs a duration: {EXPECTED}"))?;
            parse_duration_us(arg).ok_or_else(|| {
                format!("keep-alive \"{text}\": \"{arg}\" is not a duration like 90s, 10m or 4h")
            })
        };
        match kind {
            "fixed" => Ok(Self::Fixed {
                ttl_us: duration(arg)?,
            }),
            "fixed-lifetime" => Ok(Self::FixedLifetime {
                ttl_us: duration(arg)?,
            }),
            "hybrid" => {
                let range_us = match arg {
                    None => DEFAULT_HYBRID_RANGE_US,
                    Some(_) => duration(arg)?,
                };
                if range_us == 0 {
                    return Err(format!(
                        "keep-alive \"{text}\": the hybrid range must be > 0"
                    ));
                }
                Ok(Self::Hybrid { range_us })
            }
            "greedy-dual" if arg.is_none() => Ok(Self::GreedyDual),
            _ => Err(format!("unknown keep-alive policy \"{text}\": {EXPECTED}")),
        }
    }
}

impl KeepAliveSpec {
    /// The policy this names, with nothing seen yet.
    pub fn policy(self) -> Box<dyn KeepAlive> {
        match self {
            Self::Fixed { ttl_us } => Box::new(FixedTtl::new(ttl_us)),
            Self::FixedLifetime { ttl_us } => Box::new(FixedTtl::lifetime(ttl_us)),
            Self::Hybrid { range_us } => Box::new(HybridHistogram::new(range_us)),
            Self::GreedyDual => Box::new(GreedyDual::new()),
        }
    }
}

impl serde::Serialize for KeepAliveSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for KeepAliveSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl FromStr for KeepAliveSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl fmt::Display for KeepAliveSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Fixed { ttl_us } => write!(f, "fixed:{}", format_duration(ttl_us)),
            Self::FixedLifetime { ttl_us } => {
                write!(f, "fixed-lifetime:{}", format_duration(ttl_us))
            }
            Self::Hybrid { range_us } if range_us == DEFAULT_HYBRID_RANGE_US => {
                f.write_str("hybrid")
            }
            Self::Hybrid { range_us } => write!(f, "hybrid:{}", format_duration(range_us)),
            Self::GreedyDual => f.write_str("greedy-dual"),
        }
    }
}

/// Units, largest first, in microseconds.
const UNITS: [(&str, u64); 5] = [
    ("h", 3_600_000_000),
    ("m", 60_000_000),
    ("s", 1_000_000),
    ("ms", 1_000),
    ("us", 1),
];

/// `<digits><unit>` to microseconds; `None` if malformed or overflowing.
fn parse_duration_us(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits.parse().ok()?;
    let (_, scale) = UNITS.iter().find(|(name, _)| *name == unit)?;
    value.checked_mul(*scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000_000;

    fn fixed(ttl_us: u64) -> KeepAliveSpec {
        KeepAliveSpec::Fixed { ttl_us }
    }

    fn hybrid(range_us: u64) -> KeepAliveSpec {
        KeepAliveSpec::Hybrid { range_us }
    }

    #[test]
    fn parses_and_round_trips() {
        // (text, spec, canonical display)
        let cases = [
            ("fixed:10m", fixed(10 * MIN), "fixed:10m"),
            ("fixed:90s", fixed(90_000_000), "fixed:90s"),
            ("fixed:120s", fixed(2 * MIN), "fixed:2m"), // 120 s = 2 m
            ("fixed:0s", fixed(0), "fixed:0s"),
            ("fixed:1500ms", fixed(1_500_000), "fixed:1500000us"),
            ("fixed:7us", fixed(7), "fixed:7us"),
            ("fixed:60m", fixed(60 * MIN), "fixed:1h"), // the scheduler's policy name
            ("fixed:1h", fixed(60 * MIN), "fixed:1h"),
            ("fixed:90m", fixed(90 * MIN), "fixed:90m"),
            ("fixed:3h", fixed(180 * MIN), "fixed:3h"),
            (
                "fixed-lifetime:10m",
                KeepAliveSpec::FixedLifetime { ttl_us: 10 * MIN },
                "fixed-lifetime:10m",
            ),
            ("hybrid", hybrid(240 * MIN), "hybrid"),
            ("hybrid:4h", hybrid(240 * MIN), "hybrid"), // the default range
            ("hybrid:2h", hybrid(120 * MIN), "hybrid:2h"),
            ("greedy-dual", KeepAliveSpec::GreedyDual, "greedy-dual"),
        ];
        for (text, spec, shown) in cases {
            assert_eq!(KeepAliveSpec::parse(text), Ok(spec), "{text}");
            assert_eq!(spec.to_string(), shown, "{text}");
            assert_eq!(KeepAliveSpec::parse(shown), Ok(spec), "{shown}");
        }
    }

    #[test]
    fn display_matches_the_scheduler_policy_names() {
        let cases: [(KeepAliveSpec, String); 6] = [
            (fixed(10 * MIN), FixedTtl::new(10 * MIN).name()),
            (fixed(60 * MIN), FixedTtl::new(60 * MIN).name()),
            (fixed(1_500_000), FixedTtl::new(1_500_000).name()),
            (
                KeepAliveSpec::FixedLifetime { ttl_us: 20 * MIN },
                FixedTtl::lifetime(20 * MIN).name(),
            ),
            (hybrid(240 * MIN), HybridHistogram::new(240 * MIN).name()),
            (KeepAliveSpec::GreedyDual, GreedyDual::new().name()),
        ];
        for (spec, name) in cases {
            assert_eq!(spec.to_string(), name);
            assert_eq!(spec.policy().name(), name);
        }
    }

    #[test]
    fn rejects_bad_names() {
        for text in [
            "",
            "fixed",
            "fixed:",
            "fixed:10",
            "fixed:10d",
            "fixed:-1m",
            "fixed:1.5m",
            "lru",
            "hybrid:0s",
            "greedy-dual:1m",
            "fixed:99999999999999999999h",
        ] {
            let err = KeepAliveSpec::parse(text).expect_err(text);
            assert!(err.contains(text.trim()), "{err}");
        }
    }
}
