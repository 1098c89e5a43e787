//! Stream load generator for the benchmark: what `oha` cannot measure for a
//! streamed answer, the time to its first byte, and many slow streams held
//! open at once. Prints one JSON object on stdout.
//!
//! ```text
//! freellm-stream-load --url URL --body JSON [--header 'Name: value']...
//!     load mode:  [--connections C] [--duration-s S]
//!     hold mode:  --hold N [--ready-file PATH] [--open-parallel P]
//! ```
//!
//! **Load mode** (default): C connections, each sending the request again as
//! soon as the previous answer ended, for S seconds. Reports the answers,
//! the requests per second, and p50/p99 of the time to the first body byte
//! (`ttfb`) and to the end of the answer (`total`). An answer is complete
//! when it is a 200 whose body ends with `data: [DONE]`.
//!
//! **Hold mode**: opens N streams at once (each on its own connection, at
//! most P opening at a time), writes PATH once every stream has answered 200
//! and received its first byte (the benchmark then reads the gateway's memory and measures
//! other clients), and reads every stream to its end. Reports how many
//! opened and completed, the time to open them all, and the longest pause
//! between two frames of one stream (a stall shows up there).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Options {
    url: hyper::Uri,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    connections: usize,
    duration: Duration,
    hold: usize,
    ready_file: Option<String>,
    open_parallel: usize,
}

/// What one request saw.
struct Answer {
    ttfb: Duration,
    total: Duration,
    complete: bool,
    /// The longest pause between two body frames.
    max_gap: Duration,
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("freellm-stream-load: {e}");
            eprintln!(
                "usage: freellm-stream-load --url URL --body JSON [--header 'Name: value']... \
                 [--connections C] [--duration-s S] | [--hold N] [--ready-file PATH] [--open-parallel P]"
            );
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("cannot build the tokio runtime");
    let report = runtime.block_on(async {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let opts = Arc::new(opts);
        if opts.hold > 0 { hold(client, opts).await } else { load(client, opts).await }
    });
    println!("{report}");
}

/// Sends the request and reads the answer to its end; `on_first_byte` runs
/// when the first body byte of a 200 arrives. `None`: the exchange failed.
async fn send(client: &HttpClient, opts: &Options, on_first_byte: impl FnOnce()) -> Option<Answer> {
    let mut req = Request::post(opts.url.clone()).header(CONTENT_TYPE, "application/json");
    for (name, value) in &opts.headers {
        req = req.header(name, value);
    }
    let req = req.body(Full::new(opts.body.clone())).ok()?;
    let start = Instant::now();
    let resp = client.request(req).await.ok()?;
    let ok = resp.status() == hyper::StatusCode::OK;
    let mut body = resp.into_body();
    let (mut ttfb, mut last, mut max_gap) = (None, start, Duration::ZERO);
    let mut on_first_byte = Some(on_first_byte);
    // The last bytes seen, enough to tell whether the answer ended with [DONE].
    let mut tail: Vec<u8> = Vec::with_capacity(64);
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        let Some(data) = frame.data_ref() else { continue };
        if data.is_empty() {
            continue;
        }
        let now = Instant::now();
        if ttfb.is_none() {
            ttfb = Some(now - start);
            if ok && let Some(f) = on_first_byte.take() {
                f();
            }
        } else {
            max_gap = max_gap.max(now - last);
        }
        last = now;
        tail.extend_from_slice(&data[data.len().saturating_sub(32)..]);
        let excess = tail.len().saturating_sub(32);
        tail.drain(..excess);
    }
    let total = start.elapsed();
    let complete = ok && trim_end(&tail).ends_with(b"data: [DONE]");
    Some(Answer { ttfb: ttfb.unwrap_or(total), total, complete, max_gap })
}

fn trim_end(s: &[u8]) -> &[u8] {
    let n = s.iter().rev().take_while(|b| b.is_ascii_whitespace()).count();
    &s[..s.len() - n]
}

async fn load(client: HttpClient, opts: Arc<Options>) -> String {
    let deadline = Instant::now() + opts.duration;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        let (client, opts) = (client.clone(), opts.clone());
        tasks.push(tokio::spawn(async move {
            let (mut answers, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < deadline {
                match send(&client, &opts, || ()).await {
                    Some(a) => answers.push(a),
                    None => errors += 1,
                }
            }
            (answers, errors)
        }));
    }
    let (mut answers, mut errors) = (Vec::new(), 0u64);
    for task in tasks {
        if let Ok((a, e)) = task.await {
            answers.extend(a);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let incomplete = answers.iter().filter(|a| !a.complete).count();
    let mut ttfb: Vec<Duration> = answers.iter().map(|a| a.ttfb).collect();
    let mut total: Vec<Duration> = answers.iter().map(|a| a.total).collect();
    format!(
        concat!(
            r#"{{"answers":{},"incomplete":{},"errors":{},"rps":{:.1},"#,
            r#""ttfb_p50_us":{:.1},"ttfb_p99_us":{:.1},"total_p50_us":{:.1},"total_p99_us":{:.1}}}"#
        ),
        answers.len(),
        incomplete,
        errors,
        answers.len() as f64 / elapsed,
        percentile_us(&mut ttfb, 0.50),
        percentile_us(&mut ttfb, 0.99),
        percentile_us(&mut total, 0.50),
        percentile_us(&mut total, 0.99),
    )
}

async fn hold(client: HttpClient, opts: Arc<Options>) -> String {
    let started = Instant::now();
    let opening = Arc::new(Semaphore::new(opts.open_parallel));
    let opened = Arc::new(AtomicUsize::new(0));
    let all_open = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::with_capacity(opts.hold);
    for _ in 0..opts.hold {
        let (client, opts, opening, opened, all_open) =
            (client.clone(), opts.clone(), opening.clone(), opened.clone(), all_open.clone());
        tasks.push(tokio::spawn(async move {
            // Held until this stream's first byte: at most P handshakes at once.
            let permit = opening.acquire_owned().await.ok();
            let streams = opts.hold;
            send(&client, &opts, move || {
                drop(permit);
                if opened.fetch_add(1, Ordering::SeqCst) + 1 == streams {
                    all_open.notify_one();
                }
            })
            .await
        }));
    }
    let waiter = {
        let all_open = all_open.clone();
        let ready_file = opts.ready_file.clone();
        tokio::spawn(async move {
            all_open.notified().await;
            let t = started.elapsed().as_secs_f64();
            if let Some(path) = ready_file {
                let _ = std::fs::write(path, format!("{t:.3}\n"));
            }
            t
        })
    };
    let (mut completed, mut errors, mut gaps) = (0usize, 0usize, Vec::with_capacity(opts.hold));
    for task in tasks {
        match task.await {
            Ok(Some(answer)) if answer.complete => {
                completed += 1;
                gaps.push(answer.max_gap);
            }
            _ => errors += 1,
        }
    }
    let open_s = if opened.load(Ordering::SeqCst) == opts.hold {
        waiter.await.ok()
    } else {
        waiter.abort();
        None
    };
    let max_gap_ms = gaps.iter().max().copied().unwrap_or_default().as_secs_f64() * 1e3;
    format!(
        concat!(
            r#"{{"streams":{},"opened":{},"completed":{},"errors":{},"open_all_s":{},"#,
            r#""max_frame_gap_ms":{:.1},"p99_frame_gap_ms":{:.1}}}"#
        ),
        opts.hold,
        opened.load(Ordering::SeqCst),
        completed,
        errors,
        open_s.map_or("null".to_owned(), |t| format!("{t:.3}")),
        max_gap_ms,
        percentile_us(&mut gaps, 0.99) / 1e3,
    )
}

fn percentile_us(samples: &mut [Duration], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i].as_secs_f64() * 1e6
}

fn parse_args() -> Result<Options, String> {
    let (mut url, mut body, mut headers) = (None, None, Vec::new());
    let (mut connections, mut duration_s, mut hold, mut ready_file, mut open_parallel) = (1, 10.0, 0, None, 256);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<usize>().map_err(|_| format!("bad {flag} {v:?}"));
        match flag.as_str() {
            "--url" => url = Some(value.parse::<hyper::Uri>().map_err(|_| format!("bad --url {value:?}"))?),
            "--body" => body = Some(Bytes::from(value)),
            "--header" => {
                let (name, v) = value.split_once(':').ok_or_else(|| format!("bad --header {value:?}"))?;
                let name = HeaderName::try_from(name.trim()).map_err(|_| format!("bad header name {name:?}"))?;
                let v = HeaderValue::try_from(v.trim()).map_err(|_| format!("bad header value {v:?}"))?;
                headers.push((name, v));
            }
            "--connections" => connections = number(&value)?,
            "--duration-s" => duration_s = value.parse::<f64>().map_err(|_| format!("bad --duration-s {value:?}"))?,
            "--hold" => hold = number(&value)?,
            "--ready-file" => ready_file = Some(value),
            "--open-parallel" => open_parallel = number(&value)?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let url = url.ok_or("--url is required")?;
    if url.scheme_str() != Some("http") {
        return Err("--url must be an http:// URL".to_owned());
    }
    if connections == 0 || open_parallel == 0 || !duration_s.is_finite() || duration_s <= 0.0 {
        return Err("--connections, --open-parallel and --duration-s must be positive".to_owned());
    }
    Ok(Options {
        url,
        body: body.ok_or("--body is required")?,
        headers,
        connections,
        duration: Duration::from_secs_f64(duration_s),
        hold,
        ready_file,
        open_parallel,
    })
}
