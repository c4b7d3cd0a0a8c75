//! Figures, not assertions: latency and process CPU per request, direct vs through the proxy.
//! Run with `cargo test --release -p llmtrace-agent --test intercept perf -- --ignored
//! --nocapture`. Client, proxy and fake provider share this process, so the proxy's cost is
//! the difference between the two CPU figures.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use nix::sys::resource::{UsageWho, getrusage};

use crate::support::{NAME, World, client};

fn cpu_time() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let t = |tv: nix::sys::time::TimeVal| {
        Duration::from_secs(tv.tv_sec().unsigned_abs())
            + Duration::from_micros(tv.tv_usec().unsigned_abs())
    };
    t(u.user_time()) + t(u.system_time())
}

/// `n` sequential requests on one kept-alive HTTP/1.1 connection; returns latencies.
async fn run_connection(addr: SocketAddr, ca: &Path, n: usize) -> Vec<Duration> {
    let config = client::config(ca, &[b"http/1.1"]);
    let io = TokioIo::new(client::connect(addr, NAME, config).await.unwrap());
    let (mut s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let body = Bytes::from(vec![b'{'; 512]);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let req = Request::post("/bytes?n=4096&chunk=4096")
            .header("host", NAME)
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
        s.ready().await.unwrap();
        let start = Instant::now();
        let resp = s.send_request(req).await.unwrap();
        let got = resp.into_body().collect().await.unwrap().to_bytes();
        out.push(start.elapsed());
        assert_eq!(got.len(), 4096);
    }
    out
}

/// `concurrency` streams at a time on one HTTP/2 connection, `per_stream` requests each.
async fn run_h2(
    addr: SocketAddr,
    ca: &Path,
    concurrency: usize,
    per_stream: usize,
) -> Vec<Duration> {
    let config = client::config(ca, &[b"h2"]);
    let io = TokioIo::new(client::connect(addr, NAME, config).await.unwrap());
    let (s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let mut s = s.clone();
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(per_stream);
                for _ in 0..per_stream {
                    let req = Request::post(format!("https://{NAME}/bytes?n=4096&chunk=4096"))
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(vec![b'{'; 512])))
                        .unwrap();
                    let start = Instant::now();
                    let resp = s.send_request(req).await.unwrap();
                    let got = resp.into_body().collect().await.unwrap().to_bytes();
                    out.push(start.elapsed());
                    assert_eq!(got.len(), 4096);
                }
                out
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    lat
}

async fn measure_h2(addr: SocketAddr, ca: &Path, concurrency: usize, per_stream: usize) -> String {
    run_h2(addr, ca, 4, 20).await;
    let cpu = cpu_time();
    let wall = Instant::now();
    let lat = run_h2(addr, ca, concurrency, per_stream).await;
    summarize(lat, cpu_time().saturating_sub(cpu), wall.elapsed())
}

fn summarize(mut lat: Vec<Duration>, cpu: Duration, wall: Duration) -> String {
    lat.sort_unstable();
    let n = lat.len() as u32;
    format!(
        "{:>7.0} req/s  p50 {:>6} µs  p99 {:>6} µs  CPU {:>5} µs/req",
        f64::from(n) / wall.as_secs_f64(),
        lat[lat.len() / 2].as_micros(),
        lat[lat.len() * 99 / 100].as_micros(),
        (cpu / n).as_micros()
    )
}

async fn measure(addr: SocketAddr, ca: &Path, concurrency: usize, per_conn: usize) -> String {
    // Warm up (TLS sessions, leaf minting, pool).
    run_connection(addr, ca, 20).await;
    let cpu = cpu_time();
    let wall = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let ca = ca.to_path_buf();
            tokio::spawn(async move { run_connection(addr, &ca, per_conn).await })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    summarize(lat, cpu_time().saturating_sub(cpu), wall.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints figures; run in release"]
async fn perf_figures() {
    let w = World::start().await;
    for (concurrency, per_conn) in [(1, 10_000), (16, 1_000), (64, 250)] {
        let direct = measure(w.upstream.addr, &w.upstream_ca_pem, concurrency, per_conn).await;
        let proxied = measure(w.proxy_addr, &w.llmtrace_ca_pem, concurrency, per_conn).await;
        println!("h1 keep-alive, 512 B request, 4 KiB response, concurrency {concurrency}:");
        println!("  direct   {direct}");
        println!("  proxied  {proxied}");
        println!(
            "  provider connections opened by the proxy so far: {}",
            w.metrics.upstream_connections.get()
        );
    }
    for concurrency in [1, 16, 64] {
        let per_stream = 10_000 / concurrency;
        let direct = measure_h2(w.upstream.addr, &w.upstream_ca_pem, concurrency, per_stream).await;
        let proxied = measure_h2(w.proxy_addr, &w.llmtrace_ca_pem, concurrency, per_stream).await;
        println!("h2, one connection, {concurrency} concurrent streams, same request mix:");
        println!("  direct   {direct}");
        println!("  proxied  {proxied}");
    }
}
