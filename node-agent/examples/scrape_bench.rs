//! Benchmark (prints figures, asserts nothing): time to render /metrics when toa_stats has
//! 256 CPU columns, summed and per CPU.
//!
//!   cargo run --release -p toa-node-agent --example scrape_bench [ITERATIONS]
//!
//! The stats file comes from the golden fixture `tests/fixtures/stats/cpus-256.txt`, placed
//! under a temporary host root as proc/1/net/toa_stats; each render reads and parses it
//! again, exactly as a real scrape does.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use toa_node_agent::host::real::RealHost;
use toa_node_agent::metrics::{Metrics, SharedView};

fn main() -> anyhow::Result<()> {
    let iterations: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(2000);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stats/cpus-256.txt");
    let root = std::env::temp_dir().join(format!("toa-scrape-bench-{}", std::process::id()));
    std::fs::create_dir_all(root.join("proc/1/net"))?;
    std::fs::copy(&fixture, root.join("proc/1/net/toa_stats"))?;
    for per_cpu in [false, true] {
        let view: SharedView = Arc::default();
        let metrics = Metrics::new(Arc::new(RealHost::new(&root)), view, per_cpu);
        let body = metrics.render()?;
        anyhow::ensure!(
            body.contains("toa_syn_recv_sock_toa_total"),
            "the rendered exposition has no toa counters"
        );
        let mut times: Vec<Duration> = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let t = Instant::now();
            let out = metrics.render()?;
            times.push(t.elapsed());
            std::hint::black_box(out);
        }
        times.sort();
        let mean = times.iter().sum::<Duration>() / iterations as u32;
        let pct = |p: f64| times[((iterations as f64 * p) as usize).min(iterations - 1)];
        println!(
            "scrape 256 CPUs {:>8}: {} bytes, mean {:?}, p50 {:?}, p99 {:?}, max {:?} ({iterations} renders)",
            if per_cpu { "per-cpu" } else { "summed" },
            body.len(),
            mean,
            pct(0.50),
            pct(0.99),
            times[iterations - 1],
        );
    }
    std::fs::remove_dir_all(&root)?;
    Ok(())
}
