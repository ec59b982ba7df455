//! The `curve` scenario: latency against delivered rate. The offered load rises step by
//! step (10k, 30k, 100k, 300k, 1M, 3M updates/s out, every tick: 1,000 clients, each on
//! one of 100 symbols, so each tick in goes to 10 clients) until neither TickMesh nor
//! nats-server WS delivers 90 % of what is offered. Each step starts its own mesh at that
//! rate and runs the load generator against both. The report is a table and an SVG of
//! p50 and p99 against the delivered rate (`docs/bench-curve.svg`).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::latency;
use super::results::{Run, Stored, System};
use super::runner::{Env, Load, MeshSpec, args, fix_repeat, loadgen, start_mesh, universe};

/// Updates per second out, offered at each step.
const STEPS: [u64; 6] = [10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000];
/// Clients per symbol: 1,000 clients over 100 symbols.
const FAN: u64 = 10;
/// A step keeps up when it delivers this share of the offer.
const KEEPS_UP: f64 = 0.9;

#[derive(Debug, Serialize, Deserialize)]
pub struct Curve {
    pub conns: u64,
    pub symbols: u64,
    pub steps: Vec<Step>,
}

/// One step: its offer and a run of each system.
#[derive(Debug, Serialize, Deserialize)]
pub struct Step {
    pub offered: u64,
    pub ticks_per_sec_in: u64,
    pub runs: Vec<Run>,
}

pub fn run(env: &Env) -> anyhow::Result<Curve> {
    let symbols = universe(100);
    let duration = env.pick("8", "4");
    let mut steps = Vec::new();
    for offered in STEPS {
        let rate = offered / FAN;
        let mesh = start_mesh(
            env,
            &MeshSpec::new("curve", &symbols, u32::try_from(rate)?).paced(),
        )?;
        let mut runs = Vec::new();
        for (system, nats, net) in [("tickmesh", false, "81"), ("nats", true, "82")] {
            let label = format!("{system}-{offered}");
            runs.push(loadgen(
                env,
                &mesh,
                "curve",
                &Load {
                    label: &label,
                    nats,
                    // The latency scenario's load, with a thread more and a shorter warm-up.
                    args: fix_repeat(
                        [
                            latency::load(1000, &symbols, duration, net),
                            args(&["--threads", "2", "--warmup-s", "2"]),
                        ]
                        .concat(),
                    ),
                },
            )?);
        }
        mesh.stop();
        let behind = runs
            .iter()
            .all(|r| r.summary.updates_per_s < KEEPS_UP * offered as f64);
        steps.push(Step {
            offered,
            ticks_per_sec_in: rate,
            runs,
        });
        if behind {
            break;
        }
    }
    Ok(Curve {
        conns: 1000,
        symbols: 100,
        steps,
    })
}

/// One system's figures at one step.
struct Point {
    offered: f64,
    delivered: f64,
    p50_ms: f64,
    p99_ms: f64,
    cores: f64,
}

impl Point {
    fn keeps_up(&self) -> bool {
        self.delivered >= KEEPS_UP * self.offered
    }

    fn per_cpu_s(&self) -> f64 {
        if self.cores > 0.0 {
            self.delivered / self.cores
        } else {
            0.0
        }
    }
}

/// The points of `system`, in step order. TickMesh's server CPU is the edge's plus
/// nats-server's (which feeds it); the comparison's is nats-server's.
fn points(v: &Curve, system: System) -> anyhow::Result<Vec<Point>> {
    let mut out = Vec::new();
    for step in &v.steps {
        let run = step
            .runs
            .iter()
            .find(|r| r.system == system)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "curve: the step at {} has no {} run",
                    step.offered,
                    system.name()
                )
            })?;
        let latency = &run.summary.latency;
        out.push(Point {
            offered: step.offered as f64,
            delivered: run.summary.updates_per_s,
            p50_ms: latency.p50_us as f64 / 1000.0,
            p99_ms: latency.p99_us as f64 / 1000.0,
            cores: run.server_cores()?,
        });
    }
    Ok(out)
}

fn rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else {
        format!("{:.0}k", x / 1e3)
    }
}

/// The report section (table, saturation points) and the SVG.
pub fn report(v: &Stored<Curve>) -> anyhow::Result<(String, String)> {
    let tm = points(&v.result, System::Tickmesh)?;
    let nats = points(&v.result, System::Nats)?;
    let quick = v.quick_mark();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Latency against load{quick}\n\n\
         1,000 clients, each on one of 100 symbols at every tick (`quote`, JSON), so each tick \
         in goes out 10 times; the offer rises until neither system delivers 90 % of it. \
         TickMesh cores are the edge's plus nats-server's (which feeds it); the comparison's \
         are nats-server's. Produced by `{}`.\n\n\
         ![p50 and p99 latency against delivered updates per second](bench-curve.svg)\n",
        v.xtask_command
    );
    let _ = writeln!(
        md,
        "| offered out | TickMesh delivered | p50 | p99 | cores | updates per CPU-s | nats-server WS delivered | p50 | p99 | cores | updates per CPU-s |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (a, b) in tm.iter().zip(&nats) {
        let mark = |p: &Point| if p.keeps_up() { "" } else { " (behind)" };
        let _ = writeln!(
            md,
            "| {}/s | {}/s{} | {:.2} ms | {:.2} ms | {:.2} | {} | {}/s{} | {:.2} ms | {:.2} ms | {:.2} | {} |",
            rate(a.offered),
            rate(a.delivered),
            mark(a),
            a.p50_ms,
            a.p99_ms,
            a.cores,
            rate(a.per_cpu_s()),
            rate(b.delivered),
            mark(b),
            b.p50_ms,
            b.p99_ms,
            b.cores,
            rate(b.per_cpu_s()),
        );
    }
    md.push('\n');
    for (who, pts) in [("TickMesh", &tm), ("nats-server WS", &nats)] {
        match pts.iter().rev().find(|p| p.keeps_up()) {
            Some(p) => {
                let _ = writeln!(
                    md,
                    "- {who} keeps up to {}/s offered ({}/s delivered, {} updates per CPU-second){}.",
                    rate(p.offered),
                    rate(p.delivered),
                    rate(p.per_cpu_s()),
                    match pts.iter().find(|q| !q.keeps_up()) {
                        Some(q) => format!(
                            "; at {}/s offered it delivers {}/s",
                            rate(q.offered),
                            rate(q.delivered)
                        ),
                        None => "; the last step offered was still met".into(),
                    }
                );
            }
            None => {
                let _ = writeln!(md, "- {who} fell behind from the first step.");
            }
        }
    }
    md.push('\n');
    Ok((md, svg(&tm, &nats)))
}

/// p50 (solid) and p99 (dashed) in ms against delivered updates/s, both axes logarithmic.
fn svg(tm: &[Point], nats: &[Point]) -> String {
    let (w, h, left, right, top, bottom) = (720.0, 420.0, 70.0, 20.0, 20.0, 50.0);
    let all = tm.iter().chain(nats);
    let lo_x = all
        .clone()
        .map(|p| p.delivered)
        .fold(f64::MAX, f64::min)
        .max(1.0);
    let hi_x = all.clone().map(|p| p.delivered).fold(1.0, f64::max);
    let lo_y = all
        .clone()
        .map(|p| p.p50_ms)
        .fold(f64::MAX, f64::min)
        .max(0.01);
    let hi_y = all.map(|p| p.p99_ms).fold(0.01, f64::max);
    // Whole decades around the data.
    let (x0, x1) = (
        lo_x.log10().floor(),
        hi_x.log10().ceil().max(lo_x.log10().floor() + 1.0),
    );
    let (y0, y1) = (
        lo_y.log10().floor(),
        hi_y.log10().ceil().max(lo_y.log10().floor() + 1.0),
    );
    let px = |x: f64| left + (x.max(1.0).log10() - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| h - bottom - (y.max(0.001).log10() - y0) / (y1 - y0) * (h - top - bottom);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    for d in (x0 as i32)..=(x1 as i32) {
        let x = px(10f64.powi(d));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            h - bottom,
            h - bottom + 16.0,
            rate(10f64.powi(d)).replace(".00", "")
        );
    }
    for d in (y0 as i32)..=(y1 as i32) {
        let y = py(10f64.powi(d));
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{} ms</text>"##,
            w - right,
            left - 6.0,
            y + 4.0,
            10f64.powi(d)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">updates delivered per second</text>"#,
        (left + w - right) / 2.0,
        h - 12.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">latency, ingest to client</text>"#,
        (top + h - bottom) / 2.0
    );
    for (pts, color, name) in [
        (tm, "#1f77b4", "TickMesh"),
        (nats, "#d62728", "nats-server WS"),
    ] {
        for (pick, dash, what) in [
            ((|p: &Point| p.p50_ms) as fn(&Point) -> f64, "", "p50"),
            (|p: &Point| p.p99_ms, r#" stroke-dasharray="6 4""#, "p99"),
        ] {
            let path: Vec<String> = pts
                .iter()
                .map(|p| format!("{:.1},{:.1}", px(p.delivered), py(pick(p))))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}><title>{name} {what}</title></polyline>"#,
                path.join(" ")
            );
            for p in pts {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                    px(p.delivered),
                    py(pick(p))
                );
            }
        }
    }
    for (i, (color, name)) in [("#1f77b4", "TickMesh"), ("#d62728", "nats-server WS")]
        .iter()
        .enumerate()
    {
        let y = top + 14.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{name} (solid p50, dashed p99)</text>"#,
            left + 10.0,
            left + 40.0,
            left + 46.0,
            y + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::results::sample_run;

    fn stored(steps: Vec<Step>) -> Stored<Curve> {
        Stored {
            scenario: "curve".into(),
            quick: false,
            took_s: 1,
            xtask_command: "cargo xtask bench --scenario curve".into(),
            result: Curve {
                conns: 1000,
                symbols: 100,
                steps,
            },
        }
    }

    fn step(offered: u64, tm: (f64, u64, u64), nats: (f64, u64, u64)) -> Step {
        Step {
            offered,
            ticks_per_sec_in: offered / FAN,
            runs: vec![
                sample_run("tickmesh", System::Tickmesh, tm.0, tm.1, tm.2),
                sample_run("nats", System::Nats, nats.0, nats.1, nats.2),
            ],
        }
    }

    #[test]
    fn the_report_names_each_saturation_point_and_draws_both_systems() {
        let v = stored(vec![
            step(10_000, (10_000.0, 300, 900), (10_000.0, 250, 800)),
            step(30_000, (29_000.0, 400, 1200), (20_000.0, 900, 9000)),
        ]);
        let (md, svg) = report(&v).unwrap();
        assert!(md.contains("TickMesh keeps up to 30k/s offered"), "{md}");
        assert!(
            md.contains("nats-server WS keeps up to 10k/s offered"),
            "{md}"
        );
        assert!(md.contains("20k/s (behind)"), "{md}");
        assert!(md.contains("Produced by `cargo xtask bench --scenario curve`"));
        assert_eq!(svg.matches("<polyline").count(), 4, "{svg}");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn a_step_without_a_system_s_run_is_an_error() {
        let mut v = stored(vec![step(10_000, (1.0, 1, 1), (1.0, 1, 1))]);
        v.result.steps[0]
            .runs
            .retain(|r| r.system == System::Tickmesh);
        assert!(report(&v).is_err());
    }
}
