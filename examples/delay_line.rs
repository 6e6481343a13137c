//! A TCP proxy that delays every byte by a fixed time each way (a long link's latency, with
//! no bandwidth limit): bench-e2e puts it between the tailer and the receiver when
//! `LINK_DELAY_MS` is set, to measure what batches in flight are worth on a distant link.
//!
//!     delay_line LISTEN_ADDR UPSTREAM_ADDR DELAY_MS

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Copies `from` to `to`, each chunk written `delay` after it was read.
async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        to.shutdown().await.ok();
    });
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(tx);
    writer.await.ok();
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream, delay_ms] = args.as_slice() else {
        eprintln!("usage: delay_line LISTEN_ADDR UPSTREAM_ADDR DELAY_MS");
        std::process::exit(2);
    };
    let delay = Duration::from_millis(delay_ms.parse().expect("DELAY_MS is a number"));
    let listener = TcpListener::bind(listen).await.expect("cannot listen");
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                return;
            };
            client.set_nodelay(true).ok();
            server.set_nodelay(true).ok();
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::join!(
                delayed(client_read, server_write, delay),
                delayed(server_read, client_write, delay)
            );
        });
    }
}
