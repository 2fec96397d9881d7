//! Streaming expansion of a [`Trace`] into timed [`Arrival`]s; see the module docs of
//! [`crate::trace`] for the rules (load scaling, time base, determinism).
//!
//! Azure 2019, as DSLab FaaS: each of a minute's `c` invocations (times the load copies) arrives
//! at an instant uniform in the minute, the minute's arrivals in time order; each draws a duration
//! from its function's [`DurationModel`]. Only one minute is ever held in memory. Drawing `n`
//! uniform instants and sorting costs `n log n`; we draw the same joint distribution in linear
//! time instead: the `n` sorted instants are the partial sums of `n + 1` exponential spacings,
//! normalised to the minute (the uniform order statistics), and the minute's function labels are
//! dealt to them in a uniformly random order (a Fisher-Yates shuffle), because which draw lands at
//! which rank is uniform and independent of the sorted values. Azure 2021 walks the sorted records. Synthetic traces merge the
//! functions' Poisson processes into one of the summed rate and pick each arrival's function in
//! proportion to its rate (the same process, generated in order without sorting).

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp1, LogNormal};
use rand_pcg::Pcg64Mcg;
use sandstorm_naming::FunctionId;

use super::{Arrival, Body, DurationModel, MAX_TIME_US, MinuteCounts, Record, Trace, TraceFormat};

const US_PER_MINUTE: u64 = 60_000_000;

/// The iterator [`Trace::arrivals`] returns.
#[derive(Debug)]
pub struct Arrivals<'a> {
    samplers: Vec<Sampler>,
    copies: Copies,
    rng: Pcg64Mcg,
    state: State<'a>,
}

#[derive(Debug)]
enum State<'a> {
    Minutes {
        counts: &'a MinuteCounts,
        seed: u64,
        next: usize,
        buf: Vec<Arrival>,
        pos: usize,
        scratch: Scratch,
    },
    Records {
        records: &'a [Record],
        next: usize,
        current: Option<Arrival>,
        left: u64,
    },
    Poisson {
        t_s: f64,
        end_s: f64,
        rate: f64,
        cumulative: Vec<f64>,
    },
    Done,
}

/// `floor(load)` copies plus one with probability `frac(load)`.
#[derive(Debug, Clone, Copy)]
struct Copies {
    whole: u64,
    frac: f64,
}

impl Copies {
    fn draw(self, rng: &mut Pcg64Mcg) -> u64 {
        if self.frac > 0.0 && rng.random::<f64>() < self.frac {
            self.whole + 1
        } else {
            self.whole
        }
    }
}

/// A [`DurationModel`] ready to draw from, in microseconds.
#[derive(Debug, Clone, Copy)]
enum Sampler {
    /// DSLab's step rule over p1..p100 (already in us, clamped to >= 1 ms).
    Steps([u64; 6]),
    LogNormal {
        dist: LogNormal<f64>,
        min_us: u64,
    },
    Fixed(u64),
    /// The arrival carries its own duration; drawing gives 0.
    Recorded,
}

/// Upper ends of the step rule's bands: p < .01 -> p1, < .25 -> p25, ..., else p100.
const STEP_BANDS: [f64; 5] = [0.01, 0.25, 0.5, 0.75, 0.99];

impl Sampler {
    fn new(model: DurationModel, format: TraceFormat) -> Self {
        // DSLab clamps 2019 durations at 1 ms; synthetic ones may be microseconds.
        let min_us = if format == TraceFormat::Azure2019 {
            1_000
        } else {
            1
        };
        match model {
            DurationModel::Percentiles(ms) => {
                let mut us = [0u64; 6];
                for (slot, v) in us.iter_mut().zip(&ms[1..]) {
                    *slot = ((v.max(0.0) * 1e3).round() as u64).max(1_000);
                }
                Self::Steps(us)
            }
            DurationModel::LogNormal { mu, sigma } => {
                match LogNormal::new(mu, sigma.abs()) {
                    Ok(dist) => Self::LogNormal { dist, min_us },
                    // Only a non-finite mu or sigma gets here (fields are public): use the median.
                    Err(_) => Self::Fixed(secs_to_us(mu.exp()).max(min_us)),
                }
            }
            DurationModel::Fixed(us) => Self::Fixed(us),
            DurationModel::Recorded => Self::Recorded,
        }
    }

    #[inline]
    fn draw(&self, rng: &mut Pcg64Mcg) -> u64 {
        match self {
            Self::Steps(us) => {
                let p: f64 = rng.random();
                let band = STEP_BANDS.iter().take_while(|&&upper| p >= upper).count();
                us[band]
            }
            // A log-normal tail is unbounded: cap it at the trace limit.
            Self::LogNormal { dist, min_us } => {
                secs_to_us(dist.sample(rng)).max(*min_us).min(MAX_TIME_US)
            }
            Self::Fixed(us) => *us,
            Self::Recorded => 0,
        }
    }
}

fn secs_to_us(seconds: f64) -> u64 {
    if seconds.is_nan() {
        0
    } else {
        (seconds * 1e6).round() as u64
    }
}

/// SplitMix64's finaliser: decorrelates seeds that differ in few bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl<'a> Arrivals<'a> {
    pub(super) fn new(trace: &'a Trace, seed: u64, load: f64) -> Self {
        let samplers = trace
            .functions
            .iter()
            .map(|f| Sampler::new(f.duration, trace.format))
            .collect();
        let valid = load.is_finite() && load > 0.0;
        let copies = Copies {
            whole: if valid { load.floor() as u64 } else { 0 },
            frac: if valid { load.fract() } else { 0.0 },
        };
        let rng = Pcg64Mcg::seed_from_u64(mix(seed));
        let state = if !valid {
            State::Done
        } else {
            match &trace.body {
                Body::Minutes(counts) => State::Minutes {
                    counts,
                    seed: mix(seed),
                    next: 0,
                    buf: Vec::new(),
                    pos: 0,
                    scratch: Scratch::default(),
                },
                Body::Records(records) => State::Records {
                    records,
                    next: 0,
                    current: None,
                    left: 0,
                },
                Body::Poisson(p) => {
                    let mut sum = 0.0;
                    let cumulative: Vec<f64> = p
                        .rates_per_s
                        .iter()
                        .map(|r| {
                            sum += r;
                            sum
                        })
                        .collect();
                    State::Poisson {
                        t_s: trace.start_us as f64 / 1e6,
                        end_s: (trace.start_us + p.duration_us) as f64 / 1e6,
                        rate: sum * load,
                        cumulative,
                    }
                }
            }
        };
        Self {
            samplers,
            copies,
            rng,
            state,
        }
    }

    fn duration(&mut self, function: u32) -> u64 {
        self.samplers
            .get(function as usize)
            .map_or(0, |s| s.draw(&mut self.rng))
    }
}

impl Iterator for Arrivals<'_> {
    type Item = Arrival;

    fn next(&mut self) -> Option<Arrival> {
        loop {
            match &mut self.state {
                State::Done => return None,
                State::Minutes { buf, pos, .. } if *pos < buf.len() => {
                    *pos += 1;
                    return Some(buf[*pos - 1]);
                }
                State::Minutes {
                    counts,
                    seed,
                    next,
                    buf,
                    pos,
                    scratch,
                } => {
                    if *next + 1 >= counts.offsets.len() {
                        self.state = State::Done;
                        continue;
                    }
                    let minute = *next;
                    *next += 1;
                    *pos = 0;
                    buf.clear();
                    let entries =
                        &counts.entries[counts.offsets[minute]..counts.offsets[minute + 1]];
                    if entries.is_empty() {
                        continue;
                    }
                    let absolute = u64::from(counts.first_minute) + minute as u64;
                    let mut rng = Pcg64Mcg::seed_from_u64(mix(*seed ^ mix(absolute)));
                    expand_minute(
                        entries,
                        absolute * US_PER_MINUTE,
                        self.copies,
                        &self.samplers,
                        &mut rng,
                        scratch,
                        buf,
                    );
                }
                State::Records {
                    records,
                    next,
                    current,
                    left,
                } => {
                    if *left > 0 {
                        *left -= 1;
                        return *current;
                    }
                    let r = records.get(*next)?;
                    *next += 1;
                    *current = Some(Arrival {
                        at_us: r.at_us,
                        function: FunctionId(r.function),
                        duration_us: r.duration_us,
                    });
                    *left = self.copies.draw(&mut self.rng);
                }
                State::Poisson {
                    t_s,
                    end_s,
                    rate,
                    cumulative,
                } => {
                    let gap: f64 = Exp1.sample(&mut self.rng);
                    *t_s += gap / *rate;
                    if *t_s >= *end_s || !t_s.is_finite() {
                        self.state = State::Done;
                        continue;
                    }
                    let at_us = (*t_s * 1e6) as u64;
                    let x = self.rng.random::<f64>() * cumulative.last().copied().unwrap_or(0.0);
                    let f = cumulative
                        .partition_point(|&c| c <= x)
                        .min(cumulative.len().saturating_sub(1));
                    let function = f as u32;
                    let duration_us = self.duration(function);
                    return Some(Arrival {
                        at_us,
                        function: FunctionId(function),
                        duration_us,
                    });
                }
            }
        }
    }
}

/// Reused buffers of one minute's expansion.
#[derive(Debug, Default)]
struct Scratch {
    /// The function of each arrival, in time order once shuffled.
    labels: Vec<u32>,
    /// Partial sums of exponential spacings: the sorted instants before normalisation.
    marks: Vec<f64>,
}

/// Expands one minute's (function, count) entries into `buf`, in time order (see the module
/// docs for why this is the same as sorting uniform draws).
fn expand_minute(
    entries: &[(u32, u32)],
    minute_start_us: u64,
    copies: Copies,
    samplers: &[Sampler],
    rng: &mut Pcg64Mcg,
    scratch: &mut Scratch,
    buf: &mut Vec<Arrival>,
) {
    let Scratch { labels, marks } = scratch;
    labels.clear();
    for &(function, count) in entries {
        if copies.frac == 0.0 {
            let n = u64::from(count).saturating_mul(copies.whole);
            labels.extend(std::iter::repeat_n(
                function,
                usize::try_from(n).unwrap_or(usize::MAX),
            ));
        } else {
            for _ in 0..count {
                for _ in 0..copies.draw(rng) {
                    labels.push(function);
                }
            }
        }
    }
    labels.shuffle(rng);
    marks.clear();
    let mut sum = 0.0;
    for _ in 0..labels.len() {
        let gap: f64 = Exp1.sample(rng);
        sum += gap;
        marks.push(sum);
    }
    let gap: f64 = Exp1.sample(rng);
    let scale = US_PER_MINUTE as f64 / (sum + gap);
    buf.extend(labels.iter().zip(marks.iter()).map(|(&function, &mark)| {
        let offset = ((mark * scale) as u64).min(US_PER_MINUTE - 1);
        let duration_us = samplers.get(function as usize).map_or(0, |s| s.draw(rng));
        Arrival {
            at_us: minute_start_us + offset,
            function: FunctionId(function),
            duration_us,
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DSLab's step rule: which percentile value each draw p returns.
    #[test]
    fn step_rule_bands() {
        // percentiles (ms) p0..p100 = 1, 2, 3, 4, 5, 6, 7 -> us after the 1 ms clamp:
        // p1 = 2000, p25 = 3000, p50 = 4000, p75 = 5000, p99 = 6000, p100 = 7000 (p0 never).
        let Sampler::Steps(us) = Sampler::new(
            DurationModel::Percentiles([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]),
            TraceFormat::Azure2019,
        ) else {
            panic!("percentiles make a step sampler");
        };
        // (p, expected us): the band [lower, upper) returns the upper end's value.
        let cases = [
            (0.0, 2000),
            (0.009_999, 2000),
            (0.01, 3000),
            (0.249, 3000),
            (0.25, 4000),
            (0.5, 5000),
            (0.75, 6000),
            (0.989, 6000),
            (0.99, 7000),
            (0.999_999, 7000),
        ];
        for (p, want) in cases {
            let band = STEP_BANDS.iter().take_while(|&&upper| p >= upper).count();
            assert_eq!(us[band], want, "p = {p}");
        }
    }

    #[test]
    fn percentile_values_are_clamped_to_one_ms() {
        // 0 ms and 0.4 ms become 1 ms (DSLab: max(0.001 s, ms x 0.001)); 2.5 ms stays 2500 us.
        let s = Sampler::new(
            DurationModel::Percentiles([0.0, 0.0, 0.4, 2.5, 2.5, 2.5, 2.5]),
            TraceFormat::Azure2019,
        );
        let Sampler::Steps(us) = s else {
            panic!("step sampler")
        };
        assert_eq!(us, [1000, 1000, 2500, 2500, 2500, 2500]);
    }

    #[test]
    fn copies_follow_the_load() {
        let mut rng = Pcg64Mcg::seed_from_u64(3);
        // load 2.0: always 2; load 0.25: 1 with probability 1/4, so ~25,000 of 100,000.
        assert!((0..1000).all(|_| {
            Copies {
                whole: 2,
                frac: 0.0,
            }
            .draw(&mut rng)
                == 2
        }));
        let ones: u64 = (0..100_000)
            .map(|_| {
                Copies {
                    whole: 0,
                    frac: 0.25,
                }
                .draw(&mut rng)
            })
            .sum();
        assert!((24_000..26_000).contains(&ones), "{ones}");
    }
}
