//! Cold-start probe for the benchmark: spawns a server command several times
//! and measures, for each run, the wall time from `spawn()` to the first
//! `200` answer on a health URL. Prints one JSON object on stdout.
//!
//! ```text
//! freellm-coldstart --port N [--path /healthz] [--runs 5] [--poll-ms 5] [--timeout-ms 30000] -- CMD [ARGS...]
//! ```
//!
//! The command inherits this process's environment (so the caller sets
//! `PORT`, `FREELLM_CACHE_DIR`, ... once). Each run is killed after its first
//! 200 and reaped before the next one starts, so runs never overlap.
//!
//! Why a compiled helper rather than a `curl` loop in bash: forking `curl`
//! costs a few milliseconds per poll, which is the same order as the poll
//! interval and would blur a ~100 ms measurement. Here a poll is one
//! `connect()` to 127.0.0.1 (refused in microseconds until the gateway
//! listens) plus, once connected, one small HTTP/1.1 request.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Options {
    port: u16,
    path: String,
    runs: usize,
    poll: Duration,
    timeout: Duration,
    command: Vec<String>,
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("freellm-coldstart: {e}");
            eprintln!(
                "usage: freellm-coldstart --port N [--path /healthz] [--runs 5] [--poll-ms 5] [--timeout-ms 30000] -- CMD [ARGS...]"
            );
            std::process::exit(2);
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], opts.port));
    let mut samples_ms = Vec::with_capacity(opts.runs);
    for run in 1..=opts.runs {
        match measure_once(&opts, addr) {
            Ok(d) => samples_ms.push(d.as_secs_f64() * 1000.0),
            Err(e) => {
                eprintln!("freellm-coldstart: run {run}: {e}");
                std::process::exit(1);
            }
        }
        // Let the port and the kernel settle between runs.
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut sorted = samples_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
    };
    let list: Vec<String> = samples_ms.iter().map(|v| format!("{v:.2}")).collect();
    println!(
        "{{\"runs_ms\":[{}],\"median_ms\":{median:.2},\"min_ms\":{:.2},\"max_ms\":{:.2},\"poll_ms\":{}}}",
        list.join(","),
        sorted[0],
        sorted[sorted.len() - 1],
        opts.poll.as_millis()
    );
}

fn measure_once(opts: &Options, addr: SocketAddr) -> Result<Duration, String> {
    let start = Instant::now();
    let mut child = Command::new(&opts.command[0])
        .args(&opts.command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot spawn {:?}: {e}", opts.command[0]))?;
    let outcome = loop {
        if is_healthy(addr, &opts.path) {
            break Ok(start.elapsed());
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("the server exited before answering: {status}"));
        }
        if start.elapsed() > opts.timeout {
            break Err(format!("no 200 on {} within {:?}", opts.path, opts.timeout));
        }
        std::thread::sleep(opts.poll);
    };
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

/// One probe: connect, send `GET path`, and check for a `200` status line.
fn is_healthy(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < 12 {
        match stream.read(&mut head[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200")
}

fn parse_args() -> Result<Options, String> {
    let mut port = None;
    let mut path = "/healthz".to_owned();
    let mut runs = 5usize;
    let mut poll_ms = 5u64;
    let mut timeout_ms = 30_000u64;
    let mut args = std::env::args().skip(1);
    let mut command = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "--" {
            command.extend(args.by_ref());
            break;
        }
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--port" => port = Some(value()?.parse::<u16>().map_err(|e| format!("--port: {e}"))?),
            "--path" => path = value()?,
            "--runs" => runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--poll-ms" => poll_ms = value()?.parse().map_err(|e| format!("--poll-ms: {e}"))?,
            "--timeout-ms" => timeout_ms = value()?.parse().map_err(|e| format!("--timeout-ms: {e}"))?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let port = port.ok_or("--port is required")?;
    if runs == 0 {
        return Err("--runs must be at least 1".to_owned());
    }
    if command.is_empty() {
        return Err("no command after --".to_owned());
    }
    Ok(Options {
        port,
        path,
        runs,
        poll: Duration::from_millis(poll_ms),
        timeout: Duration::from_millis(timeout_ms),
        command,
    })
}
