//! Fault injection for the chaos test: actors call `strike` with themselves (named by their
//! tree path), and a node started with `SWITCHYARD_CHAOS` panics there at random. Compiled in only with the
//! `chaos` feature (tests); without it `strike` does nothing and the variable is ignored.
//!
//! `SWITCHYARD_CHAOS` is a `;`-separated list of `<path prefix>=<rule>`, a rule being a
//! probability per call (`node/agents=0.02`) or a burst (`node/orchestrator/scheduler=burst:6@3000`:
//! the 6 calls after the first 3000 ms of the node's life all panic, a crash loop).

/// Panics, when the node's chaos rules say so, in `actor` (named by its tree path).
#[cfg(not(feature = "chaos"))]
#[inline(always)]
pub fn strike<M: ractor::Message>(_actor: &ractor::ActorRef<M>) {}

/// Panics, when the node's chaos rules say so, in `actor` (named by its tree path).
#[cfg(feature = "chaos")]
pub fn strike<M: ractor::Message>(actor: &ractor::ActorRef<M>) {
    if let Some(path) = actor.get_name() {
        injected::strike(&path);
    }
}

/// One rule of `SWITCHYARD_CHAOS`.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// Panics on each call with this probability.
    Chance(f64),
    /// Panics on `count` calls once `after_ms` of the node's life have passed.
    Burst {
        /// Calls that panic.
        count: u32,
        /// When the burst begins, from the first call to `strike`.
        after_ms: u64,
    },
}

/// Reads `SWITCHYARD_CHAOS`'s value: each path prefix with its rule.
pub fn parse(spec: &str) -> Result<Vec<(String, Rule)>, String> {
    spec.split(';')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (path, rule) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not <path>=<rule>"))?;
            let rule = match rule.strip_prefix("burst:") {
                Some(burst) => {
                    let (count, after) = burst
                        .split_once('@')
                        .ok_or_else(|| format!("`{rule}` is not burst:<count>@<ms>"))?;
                    Rule::Burst {
                        count: count
                            .parse()
                            .map_err(|_| format!("`{count}` is no count"))?,
                        after_ms: after.parse().map_err(|_| format!("`{after}` is no time"))?,
                    }
                }
                None => match rule.parse::<f64>() {
                    Ok(p) if (0.0..=1.0).contains(&p) => Rule::Chance(p),
                    _ => return Err(format!("`{rule}` is no probability in [0, 1]")),
                },
            };
            Ok((path.trim().to_owned(), rule))
        })
        .collect()
}

#[cfg(feature = "chaos")]
mod injected {
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
    use std::time::Instant;

    use super::{Rule, parse};

    struct Armed {
        rules: Vec<(String, Rule, AtomicU32)>,
        born: Instant,
        seed: AtomicU64,
    }

    static ARMED: LazyLock<Option<Armed>> = LazyLock::new(|| {
        let spec = std::env::var("SWITCHYARD_CHAOS").unwrap_or_default();
        let rules = match parse(&spec) {
            Ok(rules) => rules,
            Err(error) => {
                tracing::error!(%error, "SWITCHYARD_CHAOS ignored");
                Vec::new()
            }
        };
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        (!rules.is_empty()).then(|| Armed {
            rules: rules
                .into_iter()
                .map(|(path, rule)| (path, rule, AtomicU32::new(0)))
                .collect(),
            born: Instant::now(),
            seed: AtomicU64::new(u64::from_le_bytes(seed) | 1),
        })
    });

    /// Panics, when the node's chaos rules say so, in the actor at `path`.
    pub fn strike(path: &str) {
        let Some(armed) = ARMED.as_ref() else { return };
        let hit = armed.rules.iter().any(|(prefix, rule, used)| {
            path.starts_with(prefix.as_str())
                && match rule {
                    Rule::Chance(p) => armed.next() < *p,
                    Rule::Burst { count, after_ms } => {
                        armed.born.elapsed().as_millis() as u64 >= *after_ms
                            && used.fetch_add(1, Ordering::Relaxed) < *count
                    }
                }
        });
        if hit {
            metrics::counter!("switchyard_chaos_strikes_total", "path" => path.to_owned())
                .increment(1);
            panic!("chaos: struck {path}");
        }
    }

    impl Armed {
        /// A uniform draw in [0, 1) (xorshift: no quality needed beyond spreading strikes).
        fn next(&self) -> f64 {
            let mut x = self.seed.load(Ordering::Relaxed);
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.seed.store(x, Ordering::Relaxed);
            (x >> 11) as f64 / (1u64 << 53) as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_and_nonsense_is_named() {
        assert_eq!(
            parse("node/agents=0.5; node/orchestrator/scheduler=burst:6@3000;"),
            Ok(vec![
                ("node/agents".into(), Rule::Chance(0.5)),
                (
                    "node/orchestrator/scheduler".into(),
                    Rule::Burst {
                        count: 6,
                        after_ms: 3000
                    }
                ),
            ])
        );
        assert_eq!(parse(""), Ok(vec![]));
        for bad in ["node", "node=2", "node=x", "node=burst:6", "node=burst:a@1"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
