//! Shutdown drains: requests already in progress finish with 200, none is cut off; new connections are refused.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLIENTS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests() {
    let mut cfg = config(&bundled_models());
    cfg.server.shutdown_grace_ms = 30_000;
    let gw = start(cfg).await;
    let addr = gw.http_addr;
    let body = breast_cancer_rows(4).to_string().into_bytes();
    let (first, rest) = body.split_at(body.len() / 2);

    // Each client sends its headers and half its body, so every request is in progress when shutdown begins.
    let mut streams = Vec::new();
    for _ in 0..CLIENTS {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST /v2/models/breast-cancer/infer HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.expect("head");
        s.write_all(first).await.expect("first half");
        streams.push(s);
    }
    for _ in 0..5000 {
        if gw.core.metrics.in_flight.get() as usize == CLIENTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(gw.core.metrics.in_flight.get() as usize, CLIENTS, "all requests in progress");

    let stopping = tokio::spawn(gw.shutdown());
    // Shutdown has begun once the listener refuses new connections.
    let mut refused = false;
    for _ in 0..5000 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(refused, "the listener closes when shutdown begins");
    assert!(!stopping.is_finished(), "shutdown waits for the requests in progress");

    for mut s in streams {
        s.write_all(rest).await.expect("second half");
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.expect("response");
        let text = String::from_utf8_lossy(&resp);
        assert!(text.starts_with("HTTP/1.1 200"), "in-flight request drained: {text}");
        assert!(text.contains("\"model_name\":\"breast-cancer\""), "{text}");
    }
    tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("shutdown completes").expect("task");
}

/// During the drain period requests are still answered, and each answer carries `Connection: close` so that clients
/// move to another replica; before shutdown, keep-alive answers do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_close_their_connections_while_draining() {
    let mut cfg = config(&bundled_models());
    cfg.server.drain_ms = 2_000;
    let gw = start(cfg).await;
    let addr = gw.http_addr;
    let live = |s: TcpStream| async move {
        let mut s = s;
        s.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("send");
        let mut buf = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await.expect("answered").expect("read");
        String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase()
    };
    let before = live(TcpStream::connect(addr).await.expect("connect")).await;
    assert!(before.starts_with("http/1.1 200") && !before.contains("connection: close"), "{before}");
    let stopping = tokio::spawn(gw.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let during = live(TcpStream::connect(addr).await.expect("connect during the drain")).await;
    assert!(during.starts_with("http/1.1 200") && during.contains("connection: close"), "{during}");
    stopping.await.expect("shutdown");
}
