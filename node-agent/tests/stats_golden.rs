//! Golden-file tests of the toa_stats parser: every `fixtures/stats/NAME.txt` is parsed and
//! rendered as `cpus N` + `name total` lines + `skipped: ...` lines for rows the parser left
//! out (or `error: ...` for a file it cannot read at all), and compared with
//! `NAME.golden`. The numeric goldens were computed independently of the parser (by the
//! generator that wrote the fixtures); the error goldens were reviewed by hand.
//! `UPDATE_GOLDEN=1 cargo test` rewrites goldens that are missing.

use std::path::Path;
use toa_node_agent::stats;

fn render(text: &str) -> String {
    match stats::parse(text) {
        Ok(p) => {
            let mut out = format!("cpus {}\n", p.stats.cpus.len());
            for c in &p.stats.counters {
                out.push_str(&format!("{} {}\n", c.name, c.total()));
            }
            for e in &p.skipped {
                out.push_str(&format!("skipped: {e}\n"));
            }
            out
        }
        Err(e) => format!("error: {e}\n"),
    }
}

#[test]
fn golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stats");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 10, "fixtures missing in {}", dir.display());
    let mut failures = Vec::new();
    for input in &inputs {
        let bytes = std::fs::read(input).expect("read fixture");
        let got = render(&String::from_utf8_lossy(&bytes));
        let golden = input.with_extension("golden");
        match std::fs::read_to_string(&golden) {
            Ok(want) if want == got => {}
            Ok(want) => failures.push(format!(
                "{}:\n--- want\n{want}--- got\n{got}",
                input.display()
            )),
            Err(_) if std::env::var_os("UPDATE_GOLDEN").is_some() => {
                std::fs::write(&golden, &got).expect("write golden");
            }
            Err(e) => failures.push(format!("{}: {e}", golden.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_cpu_count_has_a_fixture() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stats");
    for n in [1, 2, 64, 256] {
        let text = std::fs::read_to_string(dir.join(format!("cpus-{n}.txt"))).expect("fixture");
        let p = stats::parse(&text).expect("parse");
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        let s = p.stats;
        assert_eq!(s.cpus.len(), n);
        assert!(s.counters.iter().all(|c| c.per_cpu.len() == n));
    }
}
