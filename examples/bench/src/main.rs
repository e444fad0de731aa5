//! goomerang-bench: the same scenarios over goomerang and over a raw tokio-tungstenite baseline, in one run.
//!
//! Run it with `cargo run --release -p goomerang-bench -- --json bench.json [--quick]`.
//! Everything runs over 127.0.0.1; every scenario is bounded in count and time.
//! For profiling, `--side goomerang|raw` runs one side only of the scenarios
//! that have both (the idle and crowd rows ignore it) and `--single-thread`
//! runs everything in this process on one thread, so the cost per message
//! shows without the scheduler's cross-thread wake-ups.

mod crowd;
mod gm;
mod idle;
mod raw;
mod remote;

use std::future::Future;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// The one side `--side` runs (both when unset): for profiling one side alone.
static SIDE: OnceLock<String> = OnceLock::new();

/// Runs `measure` if `--side` asks for this side; a skipped side reads NaN, printed "-".
async fn side(
    name: &str,
    measure: impl Future<Output = Result<Sample, Box<dyn std::error::Error>>>,
) -> Result<Sample, Box<dyn std::error::Error>> {
    if SIDE.get().is_some_and(|only| only != name) {
        return Ok(Sample {
            value: f64::NAN,
            ..Sample::default()
        });
    }
    measure.await
}

/// One scenario's result, both sides.
#[derive(Debug, Clone)]
struct Row {
    name: &'static str,
    unit: &'static str,
    higher_is_better: bool,
    goomerang: f64,
    raw: f64,
    goomerang_p50_us: Option<f64>,
    goomerang_p99_us: Option<f64>,
}

/// One side's measurement of one scenario.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    value: f64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
}

/// Sizes of the run: `--quick` fits in about a minute on 2 cores.
#[derive(Debug, Clone, Copy)]
struct Plan {
    reps: usize,
    sync_1: usize,
    sync_32: usize,
    /// Requests for the cross-process 1-in-flight scenario (each pays two
    /// process wake-ups, so it runs far slower than in-process).
    sync_1_xproc: usize,
    oneway_32b: usize,
    oneway_1k: usize,
    broadcast_clients: usize,
    broadcasts: usize,
    idle_conns: usize,
    /// Connections for the large idle scenario (goomerang only).
    idle_large: usize,
    /// Seconds the 10k-connection scenario is measured for.
    crowd_secs: u64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                reps: 1,
                sync_1: 30_000,
                sync_32: 100_000,
                sync_1_xproc: 3_000,
                oneway_32b: 300_000,
                oneway_1k: 100_000,
                broadcast_clients: 100,
                broadcasts: 1_000,
                idle_conns: 10_000,
                idle_large: 100_000,
                crowd_secs: 5,
            }
        } else {
            Plan {
                reps: 3,
                sync_1: 200_000,
                sync_32: 1_000_000,
                sync_1_xproc: 20_000,
                oneway_32b: 5_000_000,
                oneway_1k: 2_000_000,
                broadcast_clients: 100,
                broadcasts: 1_000,
                idle_conns: 10_000,
                idle_large: 100_000,
                crowd_secs: 10,
            }
        }
    }
}

#[derive(Debug, Default)]
struct Args {
    json: Option<PathBuf>,
    quick: bool,
    only: Option<String>,
    serve_idle: Option<String>,
    serve_echo: Option<String>,
    side: Option<String>,
    single_thread: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--json" => args.json = Some(it.next().ok_or("--json needs a path")?.into()),
            "--quick" => args.quick = true,
            "--only" => args.only = Some(it.next().ok_or("--only needs a scenario name")?),
            "--serve-idle" => {
                args.serve_idle = Some(it.next().ok_or("--serve-idle needs goomerang|raw")?)
            }
            "--serve-echo" => {
                args.serve_echo = Some(it.next().ok_or("--serve-echo needs goomerang|raw")?)
            }
            "--single-thread" => args.single_thread = true,
            "--side" => {
                let side = it.next().ok_or("--side needs goomerang|raw")?;
                if side != "goomerang" && side != "raw" {
                    return Err(format!("--side takes goomerang or raw, not {side:?}"));
                }
                args.side = Some(side);
            }
            "-h" | "--help" => {
                println!(
                    "usage: goomerang-bench [--json PATH] [--quick] [--only SCENARIO] [--side goomerang|raw] [--single-thread]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

fn median(mut values: Vec<Sample>) -> Sample {
    values.sort_by(|a, b| a.value.total_cmp(&b.value));
    values[values.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let runtime = if args.single_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
    };
    if let Some(kind) = args.serve_idle {
        return runtime.block_on(idle::serve(&kind));
    }
    if let Some(kind) = args.serve_echo {
        return runtime.block_on(remote::serve(&kind));
    }
    if let Some(only) = args.side.clone() {
        let _ = SIDE.set(only);
    }
    let plan = Plan::new(args.quick);
    let wanted = |name: &str| args.only.as_deref().is_none_or(|only| only == name);
    let mut rows = Vec::new();
    runtime.block_on(async {
        type Run = fn(
            Plan,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<
                        Output = Result<(Sample, Sample), Box<dyn std::error::Error>>,
                    >,
            >,
        >;
        let scenarios: [(&'static str, &'static str, bool, Run); 9] = [
            ("sync_1", "req/s", true, |p| {
                Box::pin(async move {
                    Ok((
                        side("goomerang", gm::sync(p.sync_1, 1)).await?,
                        side("raw", raw::sync(p.sync_1, 1)).await?,
                    ))
                })
            }),
            ("sync_32", "req/s", true, |p| {
                Box::pin(async move {
                    Ok((
                        side("goomerang", gm::sync(p.sync_32, 32)).await?,
                        side("raw", raw::sync(p.sync_32, 32)).await?,
                    ))
                })
            }),
            // The same 32 in flight, from one task: the raw client's shape.
            ("sync_32_task", "req/s", true, |p| {
                Box::pin(async move {
                    Ok((
                        side("goomerang", gm::sync_task(p.sync_32, 32)).await?,
                        side("raw", raw::sync(p.sync_32, 32)).await?,
                    ))
                })
            }),
            // goomerang's 32 caller tasks against a raw client of 32 tasks
            // sharing its connection through a channel (one writer, one reader).
            ("sync_32_tasks", "req/s", true, |p| {
                Box::pin(async move {
                    Ok((
                        side("goomerang", gm::sync(p.sync_32, 32)).await?,
                        side("raw", raw::sync_tasks(p.sync_32, 32)).await?,
                    ))
                })
            }),
            // The client in this process, the server in another.
            ("sync_1_xproc", "req/s", true, |p| {
                Box::pin(async move { remote::sync(p.sync_1_xproc, 1).await })
            }),
            ("sync_32_xproc", "req/s", true, |p| {
                Box::pin(async move { remote::sync(p.sync_32, 32).await })
            }),
            ("oneway_32b", "msg/s", true, |p| {
                Box::pin(async move {
                    Ok((
                        side("goomerang", gm::oneway(p.oneway_32b, 32)).await?,
                        side("raw", raw::oneway(p.oneway_32b, 32)).await?,
                    ))
                })
            }),
            ("oneway_1k", "msg/s", true, |p| {
                Box::pin(async move {
                    Ok((
                        side("goomerang", gm::oneway(p.oneway_1k, 1024)).await?,
                        side("raw", raw::oneway(p.oneway_1k, 1024)).await?,
                    ))
                })
            }),
            ("broadcast_100", "s", false, |p| {
                Box::pin(async move {
                    Ok((
                        side(
                            "goomerang",
                            gm::broadcast(p.broadcast_clients, p.broadcasts),
                        )
                        .await?,
                        side("raw", raw::broadcast(p.broadcast_clients, p.broadcasts)).await?,
                    ))
                })
            }),
        ];
        for (name, unit, higher, run) in scenarios {
            if !wanted(name) {
                continue;
            }
            let mut gms = Vec::new();
            let mut raws = Vec::new();
            for _ in 0..plan.reps {
                let (g, r) = tokio::time::timeout(Duration::from_secs(300), run(plan)).await??;
                gms.push(g);
                raws.push(r);
            }
            let (g, r) = (median(gms), median(raws));
            rows.push(Row {
                name,
                unit,
                higher_is_better: higher,
                goomerang: g.value,
                raw: r.value,
                goomerang_p50_us: g.p50_us,
                goomerang_p99_us: g.p99_us,
            });
        }
        // One pass of idle connections gives both rows: server memory and connect time.
        if wanted("idle_conn_kib") || wanted("connect_10k") {
            let (mut kib, mut secs) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
            for _ in 0..plan.reps {
                let (g_kib, g_secs) = idle::measure("goomerang", plan.idle_conns).await?;
                let (r_kib, r_secs) = idle::measure("raw", plan.idle_conns).await?;
                kib.0.push(g_kib);
                kib.1.push(r_kib);
                secs.0.push(g_secs);
                secs.1.push(r_secs);
            }
            for (name, unit, (g, r)) in [("idle_conn_kib", "KiB", kib), ("connect_10k", "s", secs)]
            {
                let (g, r) = (median(g), median(r));
                rows.push(Row {
                    name,
                    unit,
                    higher_is_better: false,
                    goomerang: g.value,
                    raw: r.value,
                    goomerang_p50_us: None,
                    goomerang_p99_us: None,
                });
            }
        }
        // 10k busy connections: goomerang only, server CPU per delivered message.
        if wanted("crowd_10k") {
            let mut samples = Vec::new();
            for _ in 0..plan.reps {
                match crowd::measure(plan.idle_conns, plan.crowd_secs).await {
                    Ok(sample) => samples.push(sample),
                    Err(err) => {
                        println!("crowd_10k: not run: {err}");
                        break;
                    }
                }
            }
            if !samples.is_empty() {
                let g = median(samples);
                rows.push(Row {
                    name: "crowd_10k",
                    unit: "µs CPU/msg",
                    higher_is_better: false,
                    goomerang: g.value,
                    raw: f64::NAN,
                    goomerang_p50_us: g.p50_us,
                    goomerang_p99_us: g.p99_us,
                });
            }
        }
        // 100k idle connections on one machine: goomerang only.
        // The raw baseline's default buffers (about 134 KiB a connection on
        // each side) would need some 27 GB for it, more than this machine has.
        // Where the open-file limit cannot be raised that far (a container
        // without CAP_SYS_RESOURCE), it is reported as not run, not as a failure.
        if wanted("idle_100k_kib") {
            let (g_kib, g_secs) = match idle::measure("goomerang", plan.idle_large).await {
                Ok(measured) => measured,
                Err(err) => {
                    println!("idle_100k_kib: not run: {err}");
                    return Ok(());
                }
            };
            println!(
                "idle_100k_kib: {} goomerang connections opened in {:.2} s",
                plan.idle_large, g_secs.value
            );
            rows.push(Row {
                name: "idle_100k_kib",
                unit: "KiB",
                higher_is_better: false,
                goomerang: g_kib.value,
                raw: f64::NAN,
                goomerang_p50_us: None,
                goomerang_p99_us: None,
            });
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    print_table(&rows, &plan);
    if let Some(path) = args.json {
        std::fs::write(&path, to_json(&rows))?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

fn print_table(rows: &[Row], plan: &Plan) {
    println!(
        "\ngoomerang-bench ({} repetition(s), median reported; 127.0.0.1, 2 worker threads)\n",
        plan.reps
    );
    println!(
        "{:<15} {:>8} {:>14} {:>14} {:>10} {:>10} {:>10}",
        "scenario", "unit", "goomerang", "raw", "ratio", "p50 µs", "p99 µs"
    );
    for row in rows {
        // Ratio > 1 means goomerang is better, whichever direction the unit goes.
        let ratio = if row.higher_is_better {
            row.goomerang / row.raw
        } else {
            row.raw / row.goomerang
        };
        let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
        // A scenario without a baseline (NaN) shows "-" for it and its ratio.
        let measured = |v: f64, text: String| if v.is_nan() { "-".to_owned() } else { text };
        println!(
            "{:<15} {:>8} {:>14} {:>14} {:>10} {:>10} {:>10}",
            row.name,
            row.unit,
            measured(row.goomerang, format!("{:.2}", row.goomerang)),
            measured(row.raw, format!("{:.2}", row.raw)),
            measured(ratio, format!("{ratio:.2}x")),
            opt(row.goomerang_p50_us),
            opt(row.goomerang_p99_us)
        );
    }
}

fn to_json(rows: &[Row]) -> String {
    let num = |v: f64| {
        if v.is_finite() {
            format!("{v}")
        } else {
            "null".to_owned()
        }
    };
    let opt = |v: Option<f64>| v.map_or("null".to_owned(), num);
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{{\"name\": \"{}\", \"unit\": \"{}\", \"higher_is_better\": {}, \"goomerang\": {}, \"raw\": {}, \"goomerang_p50_us\": {}, \"goomerang_p99_us\": {}, \"ratio\": {}}}",
                r.name,
                r.unit,
                r.higher_is_better,
                num(r.goomerang),
                num(r.raw),
                opt(r.goomerang_p50_us),
                opt(r.goomerang_p99_us),
                num(if r.higher_is_better { r.goomerang / r.raw } else { r.raw / r.goomerang }),
            )
        })
        .collect();
    format!("{{\"scenarios\": [\n  {}\n]}}\n", items.join(",\n  "))
}

/// p50 and p99 of latencies, in microseconds.
fn percentiles(mut latencies: Vec<Duration>) -> (Option<f64>, Option<f64>) {
    if latencies.is_empty() {
        return (None, None);
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    (Some(at(0.50)), Some(at(0.99)))
}
