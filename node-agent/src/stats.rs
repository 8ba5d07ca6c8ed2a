//! Parser for `/proc/net/toa_stats`: a header of CPU columns, then `name:` rows of one
//! decimal per possible CPU. Any CPU count, extra rows, any row order and `name :` spacing
//! are accepted. A header that is not `CPU0 CPU1 ...` is an error (no column can be read
//! then); a row that cannot be read is skipped and reported with its line and cause, and the
//! other rows are still returned. That matters for toa modules that are not ours (a vendor's,
//! loaded by hand or by the distribution): their rows are exported under their own names, and
//! nothing of ours is assumed to be there.

/// The counters every toa module of this project exports, in the module's order. A module
/// without them is reported (see [`Parsed::skipped`]), not refused.
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

/// A parsed file: the rows that could be read, and why the others could not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub stats: Stats,
    /// Rows skipped (with their 1-based line and the cause), and core counters that no row
    /// provided (line 0).
    pub skipped: Vec<StatsError>,
}

/// Parses the whole file. Errors: an empty file or a header that is not `CPU<n>` tokens.
/// Bad rows (no `name:`, a name outside `[A-Za-z0-9_]`, a value that is not a u64, a value
/// count that differs from the header's, a name seen before) and missing core counters are
/// listed in [`Parsed::skipped`].
pub fn parse(text: &str) -> Result<Parsed, StatsError> {
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
    let mut skipped = Vec::new();
    for (no, line) in lines {
        match parse_row(no, line, cpus.len()) {
            Ok(c) if counters.iter().any(|o| o.name == c.name) => {
                skipped.push(err(no, format!("counter {} appears twice", c.name)));
            }
            Ok(c) => counters.push(c),
            Err(e) => skipped.push(e),
        }
    }
    let missing: Vec<&str> = CORE_COUNTERS
        .iter()
        .copied()
        .filter(|n| !counters.iter().any(|c| c.name == *n))
        .collect();
    if !missing.is_empty() {
        skipped.push(err(
            0,
            format!(
                "missing counters {} (a toa module of another origin?)",
                missing.join(", ")
            ),
        ));
    }
    Ok(Parsed {
        stats: Stats { cpus, counters },
        skipped,
    })
}

/// One `name: v0 v1 ...` row with `columns` values.
fn parse_row(no: usize, line: &str, columns: usize) -> Result<Counter, StatsError> {
    let (name, values) = line
        .split_once(':')
        .ok_or_else(|| err(no, format!("{line:?} has no `name:` prefix")))?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(err(no, format!("counter name {name:?} is not [a-z0-9_]+")));
    }
    let mut per_cpu = Vec::with_capacity(columns);
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
    if per_cpu.len() != columns {
        return Err(err(
            no,
            format!("{name}: {} values for {columns} CPU columns", per_cpu.len()),
        ));
    }
    Ok(Counter {
        name: name.to_string(),
        per_cpu,
    })
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

    fn parse_clean(text: &str) -> Stats {
        let p = parse(text).expect("parse");
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        p.stats
    }

    #[test]
    fn sums_over_cpus() {
        let st = parse_clean(&file(3, ""));
        assert_eq!(st.cpus, [0, 1, 2]);
        assert_eq!(st.total("syn_recv_sock_toa"), Some(3));
        assert_eq!(st.total("ip6_address_free"), Some(60 * 3 + 3));
    }

    #[test]
    fn spaced_colon_and_extra_rows() {
        let text = "  CPU0\tCPU1\n\nsyn_recv_sock_toa : 1 2\nsyn_recv_sock_no_toa:3 4\ngetname_toa_ok: 0 0\ngetname_toa_mismatch: 0 0\ngetname_toa_empty: 0 0\nip6_address_alloc: 0 0\nip6_address_free: 0 0\nnew_thing: 5 6\n";
        let st = parse_clean(text);
        assert_eq!(st.total("syn_recv_sock_toa"), Some(3));
        assert_eq!(st.total("syn_recv_sock_no_toa"), Some(7));
        assert_eq!(st.total("new_thing"), Some(11));
    }

    #[test]
    fn file_errors_point_at_the_line() {
        let e = parse("").expect_err("empty");
        assert!(e.reason.contains("empty"));
        let e = parse("cpu0\n").expect_err("header");
        assert_eq!(e.line, 1);
    }

    /// The one skipped problem of `file(cpus, extra)`.
    fn only_skip(cpus: usize, extra: &str) -> StatsError {
        let p = parse(&file(cpus, extra)).expect("parse");
        assert_eq!(p.skipped.len(), 1, "{:?}", p.skipped);
        // Every good row is still there.
        for n in CORE_COUNTERS {
            assert!(p.stats.get(n).is_some(), "{n} lost by a bad row");
        }
        p.skipped[0].clone()
    }

    #[test]
    fn bad_rows_are_skipped_with_their_line_and_cause() {
        let e = only_skip(2, "bad_row: 1\n");
        assert_eq!(e.line, 9);
        assert!(e.reason.contains("1 values for 2 CPU columns"), "{e}");
        let e = only_skip(2, "neg: -1 2\n");
        assert!(e.reason.contains("\"-1\""));
        let e = only_skip(2, "no colon here\n");
        assert!(e.to_string().starts_with("toa_stats line 9:"));
        let e = only_skip(1, "syn_recv_sock_toa: 1\n");
        assert!(e.reason.contains("twice"));
        let e = only_skip(1, "x y: 1\n");
        assert!(e.reason.contains("\"x y\""));
        let e = only_skip(1, "big: 99999999999999999999\n");
        assert!(e.reason.contains("does not fit in 64 bits"), "{e}");
    }

    /// A toa module of another origin: fewer counters, another order, names of its own, one
    /// row this parser cannot read. What can be read is returned under its own name, nothing
    /// is renamed, and the missing core counters are reported.
    #[test]
    fn foreign_layout_keeps_what_it_can() {
        let text = "CPU0 CPU1\n\
                    getname_toa_ok: 4 5\n\
                    vendor_full_nat_hits: 7 8\n\
                    syn_recv_sock_toa: 1 1\n\
                    total: 3\n";
        let p = parse(text).expect("parse");
        let names: Vec<&str> = p.stats.counters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "getname_toa_ok",
                "vendor_full_nat_hits",
                "syn_recv_sock_toa"
            ]
        );
        assert_eq!(p.stats.total("vendor_full_nat_hits"), Some(15));
        assert_eq!(p.stats.total("getname_toa_ok"), Some(9));
        assert_eq!(p.skipped.len(), 2, "{:?}", p.skipped);
        assert_eq!(p.skipped[0].line, 5);
        assert!(p.skipped[1]
            .reason
            .contains("missing counters syn_recv_sock_no_toa"));
        assert!(!p.skipped[1].reason.contains("getname_toa_ok"));
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
