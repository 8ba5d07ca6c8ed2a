//! Parser for `/proc/net/toa_stats`: a header of CPU columns, then `name:` rows of one
//! decimal per possible CPU. Any CPU count, extra rows and `name :` spacing are accepted;
//! anything else is an error that says which line is wrong and why.

/// The counters every toa module must export, in the module's order.
pub const CORE_COUNTERS: [&str; 7] = [
    "syn_recv_sock_toa",
    "syn_recv_sock_no_toa",
    "getname_toa_ok",
    "getname_toa_mismatch",
    "getname_toa_empty",
    "ip6_address_alloc",
    "ip6_address_free",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    pub name: String,
    /// One value per possible CPU, in header order.
    pub per_cpu: Vec<u64>,
}

impl Counter {
    /// Sum over CPUs; saturates instead of wrapping (a wrapped counter would look reset).
    pub fn total(&self) -> u64 {
        self.per_cpu.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// CPU numbers from the header (`CPU0 CPU3` -> [0, 3]).
    pub cpus: Vec<u32>,
    pub counters: Vec<Counter>,
}

impl Stats {
    pub fn get(&self, name: &str) -> Option<&Counter> {
        self.counters.iter().find(|c| c.name == name)
    }

    pub fn total(&self, name: &str) -> Option<u64> {
        self.get(name).map(Counter::total)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("toa_stats{}: {reason}", if *.line == 0 { String::new() } else { format!(" line {}", .line) })]
pub struct StatsError {
    /// 1-based line number (0: the file as a whole).
    pub line: usize,
    pub reason: String,
}

fn err(line: usize, reason: impl Into<String>) -> StatsError {
    StatsError {
        line,
        reason: reason.into(),
    }
}

/// Parses the whole file.
pub fn parse(text: &str) -> Result<Stats, StatsError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty());
    let (hline, header) = lines
        .next()
        .ok_or_else(|| err(0, "empty file (expected a `CPU0 CPU1 ...` header)"))?;
    let mut cpus = Vec::new();
    for tok in header.split_whitespace() {
        let n = tok
            .strip_prefix("CPU")
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(|| {
                err(
                    hline,
                    format!("header token {tok:?} is not CPU<n> (expected `CPU0 CPU1 ...`)"),
                )
            })?;
        cpus.push(n);
    }
    let mut counters: Vec<Counter> = Vec::new();
    for (no, line) in lines {
        let (name, values) = line
            .split_once(':')
            .ok_or_else(|| err(no, format!("{line:?} has no `name:` prefix")))?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(err(no, format!("counter name {name:?} is not [a-z0-9_]+")));
        }
        let mut per_cpu = Vec::with_capacity(cpus.len());
        for tok in values.split_whitespace() {
            let v = tok.parse::<u64>().map_err(|_| {
                if tok.bytes().all(|b| b.is_ascii_digit()) {
                    err(no, format!("{name}: value {tok} does not fit in 64 bits"))
                } else {
                    err(
                        no,
                        format!("{name}: value {tok:?} is not a non-negative decimal"),
                    )
                }
            })?;
            per_cpu.push(v);
        }
        if per_cpu.len() != cpus.len() {
            return Err(err(
                no,
                format!(
                    "{name}: {} values for {} CPU columns",
                    per_cpu.len(),
                    cpus.len()
                ),
            ));
        }
        if counters.iter().any(|c| c.name == name) {
            return Err(err(no, format!("counter {name} appears twice")));
        }
        counters.push(Counter {
            name: name.to_string(),
            per_cpu,
        });
    }
    let missing: Vec<&str> = CORE_COUNTERS
        .iter()
        .copied()
        .filter(|n| !counters.iter().any(|c| c.name == *n))
        .collect();
    if !missing.is_empty() {
        return Err(err(
            0,
            format!(
                "missing counters {} (is this a toa module's toa_stats?)",
                missing.join(", ")
            ),
        ));
    }
    Ok(Stats { cpus, counters })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(cpus: usize, extra: &str) -> String {
        let mut s: String = (0..cpus).map(|c| format!("CPU{c} ")).collect();
        s.push('\n');
        for (i, n) in CORE_COUNTERS.iter().enumerate() {
            s.push_str(n);
            s.push(':');
            for c in 0..cpus {
                s.push_str(&format!(" {}", i * 10 + c));
            }
            s.push('\n');
        }
        s.push_str(extra);
        s
    }

    #[test]
    fn sums_over_cpus() {
        let st = parse(&file(3, "")).expect("parse");
        assert_eq!(st.cpus, [0, 1, 2]);
        assert_eq!(st.total("syn_recv_sock_toa"), Some(3));
        assert_eq!(st.total("ip6_address_free"), Some(60 * 3 + 3));
    }

    #[test]
    fn spaced_colon_and_extra_rows() {
        let text = "  CPU0\tCPU1\n\nsyn_recv_sock_toa : 1 2\nsyn_recv_sock_no_toa:3 4\ngetname_toa_ok: 0 0\ngetname_toa_mismatch: 0 0\ngetname_toa_empty: 0 0\nip6_address_alloc: 0 0\nip6_address_free: 0 0\nnew_thing: 5 6\n";
        let st = parse(text).expect("parse");
        assert_eq!(st.total("syn_recv_sock_toa"), Some(3));
        assert_eq!(st.total("syn_recv_sock_no_toa"), Some(7));
        assert_eq!(st.total("new_thing"), Some(11));
    }

    #[test]
    fn errors_point_at_the_line() {
        let e = parse("").expect_err("empty");
        assert!(e.reason.contains("empty"));
        let e = parse("cpu0\n").expect_err("header");
        assert_eq!(e.line, 1);
        let e = parse(&file(2, "bad_row: 1\n")).expect_err("count");
        assert_eq!(e.line, 9);
        assert!(e.reason.contains("1 values for 2 CPU columns"), "{e}");
        let e = parse(&file(2, "neg: -1 2\n")).expect_err("negative");
        assert!(e.reason.contains("\"-1\""));
        let e = parse(&file(2, "no colon here\n")).expect_err("colon");
        assert!(e.to_string().starts_with("toa_stats line 9:"));
        let e = parse(&file(1, "syn_recv_sock_toa: 1\n")).expect_err("dup");
        assert!(e.reason.contains("twice"));
        let e = parse("CPU0\nsyn_recv_sock_toa: 1\n").expect_err("missing");
        assert!(e.reason.contains("getname_toa_ok"));
        let e = parse(&file(1, "x y: 1\n")).expect_err("name");
        assert!(e.reason.contains("\"x y\""));
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        let c = Counter {
            name: "x".into(),
            per_cpu: vec![u64::MAX, 5],
        };
        assert_eq!(c.total(), u64::MAX);
    }
}
