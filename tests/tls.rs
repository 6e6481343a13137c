//! The facility → central link over HTTPS with verification on, with the private CA that
//! `scripts/services.sh` makes: visits arrive exact; an expired certificate, a certificate for
//! another name and a server signed by a CA the tailer does not trust are each refused with an
//! error naming the problem, the outbox keeps everything, and it all arrives once the
//! certificate is fixed (the receiver reloads its certificate on SIGHUP).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{assert_stores_equal_source, Proc, Rig};

/// Copies `name`.pem and `name`.key of the private CA's set to the receiver's files.
fn install(tls: &Path, name: &str, cert: &Path, key: &Path) {
    std::fs::copy(tls.join(format!("{name}.pem")), cert).unwrap();
    std::fs::copy(tls.join(format!("{name}.key")), key).unwrap();
}

/// Waits until the log holds `needle` (in any case) after byte `from`; returns the line.
async fn wait_log(proc: &Proc, from: usize, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(&proc.log).unwrap_or_default();
        if let Some(line) = log
            .get(from..)
            .unwrap_or("")
            .lines()
            .find(|l| l.to_lowercase().contains(&needle.to_lowercase()))
        {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {} after 60 s:\n{}",
            proc.log.display(),
            log.get(from..).unwrap_or("")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn log_len(proc: &Proc) -> usize {
    std::fs::metadata(&proc.log)
        .map(|m| m.len() as usize)
        .unwrap_or(0)
}

/// The tailer's outbox, from its status page.
async fn outbox(tailer: &Proc) -> u64 {
    common::tailer_status(tailer).await["outbox_visits"]
        .as_u64()
        .unwrap()
}

/// Batches the receiver stored.
async fn batches(rig: &Rig) -> i64 {
    let (client, connection) = tokio_postgres::connect(&rig.pg_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .query_one("SELECT count(*) FROM cdr._stream_batches", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_verification_refuses_bad_certificates_and_delivers_once_fixed() {
    let tls = common::tls_dir();
    // GIVEN a receiver serving HTTPS with an expired certificate of the private CA, and a
    // tailer trusting that CA
    let mut rig = Rig::new("tls").await;
    let (cert, key) = (rig.dir.join("receiver.pem"), rig.dir.join("receiver.key"));
    install(&tls, "expired", &cert, &key);
    rig.receiver_extra = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    rig.ship_ca = Some(tls.join("ca.pem"));
    let receiver = rig.receiver();
    let started = std::fs::read_to_string(&receiver.log).unwrap();
    assert!(
        started.contains("scheme=\"https\"") || started.contains("scheme=https"),
        "{started}"
    );
    let mut tailer = rig.tailer(&receiver.addr);

    // WHEN a clinic works
    assert!(rig.simulate(20, 2, 3, 0).wait().unwrap().success());

    // THEN the tailer refuses the expired certificate, saying so, and keeps its visits
    let line = wait_log(&tailer, 0, "certificate expired").await;
    assert!(line.contains("certificate"), "{line}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(outbox(&tailer).await > 0, "the outbox keeps the visits");
    // (and its status page says why, for the facility's IT staff)
    let status = common::tailer_status(&tailer).await;
    let said = status["last_ship_error"].as_str().unwrap_or_default();
    assert!(said.contains("certificate expired"), "{status}");
    assert_eq!(batches(&rig).await, 0, "nothing reached the receiver");

    // WHEN the receiver's certificate becomes one for another name, reloaded on SIGHUP
    let from = log_len(&tailer);
    install(&tls, "wrong-host", &cert, &key);
    common::sighup(&receiver);
    // THEN the tailer refuses it, naming the problem
    let line = wait_log(&tailer, from, "not valid for name").await;
    assert!(line.contains("certificate"), "{line}");
    assert!(outbox(&tailer).await > 0);
    assert_eq!(batches(&rig).await, 0);

    // WHEN the right certificate is installed and reloaded (no restart)
    install(&tls, "server", &cert, &key);
    common::sighup(&receiver);
    // THEN everything arrives, exact, over the verified link
    rig.wait_quiet(&tailer, Duration::from_secs(120)).await;
    assert!(assert_stores_equal_source(&rig).await > 0);
    let reloads = std::fs::read_to_string(&receiver.log)
        .unwrap()
        .matches("TLS certificate reloaded")
        .count();
    assert_eq!(reloads, 2, "both SIGHUPs reloaded");

    // WHEN the tailer is restarted trusting another CA, and the clinic goes on
    tailer.stop();
    rig.ship_ca = Some(tls.join("other-ca.pem"));
    let before = batches(&rig).await;
    let mut tailer = rig.tailer(&receiver.addr);
    assert!(rig.simulate(10, 1, 4, 0).wait().unwrap().success());
    // THEN it refuses the receiver's certificate as of an unknown issuer, keeping its visits
    let line = wait_log(&tailer, 0, "UnknownIssuer").await;
    assert!(line.contains("ship.ca_file"), "{line}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(outbox(&tailer).await > 0);
    assert_eq!(batches(&rig).await, before);

    // WHEN it is given the right CA again
    tailer.stop();
    rig.ship_ca = Some(tls.join("ca.pem"));
    let tailer = rig.tailer(&receiver.addr);
    // THEN the rest arrives and the stores equal the source
    rig.wait_quiet(&tailer, Duration::from_secs(120)).await;
    assert_stores_equal_source(&rig).await;

    // AND plain HTTP to the HTTPS port gets no answer a client could mistake for one
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", receiver.addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP answered on the HTTPS port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_with_a_bad_certificate_file_does_not_start() {
    // GIVEN a [tls] section whose key does not belong to its certificate
    let tls = common::tls_dir();
    let mut rig = Rig::new("tls_bad").await;
    rig.receiver_extra = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        tls.join("server.pem").display(),
        tls.join("wrong-host.key").display()
    );
    // WHEN it starts
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rig.receiver()));
    // THEN it exits, naming both files
    assert!(
        result.is_err(),
        "the receiver started with a key of another certificate"
    );
    let log = std::fs::read_to_string(rig.dir.join("receiver.log")).unwrap();
    assert!(
        log.contains("tls.cert_file") && log.contains("tls.key_file"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_link_encrypted_and_verified_end_to_end() {
    let tls = common::tls_dir();
    // GIVEN the EMR, the mirror and PostgreSQL reachable only over TLS by the user the
    // processes use (it may not connect in plain), a receiver serving HTTPS, and a tailer
    // and a receiver that verify every certificate against the private CA
    let mut rig = Rig::new("tls_all").await;
    let ca = tls.join("ca.pem");
    rig.stores_ca = Some(ca.clone());
    rig.ship_ca = Some(ca.clone());
    rig.receiver_extra = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        tls.join("server.pem").display(),
        tls.join("server.key").display()
    );
    let plain_my = mysql_async::Conn::new(
        mysql_async::Opts::from_url(&rig.store_url(&rig.services.mysql_url)).unwrap(),
    )
    .await;
    assert!(
        plain_my.is_err(),
        "the TLS-only MySQL user connected in plain"
    );
    let plain_pg =
        tokio_postgres::connect(&rig.store_url(&rig.pg_url), tokio_postgres::NoTls).await;
    assert!(
        plain_pg.is_err(),
        "the TLS-only PostgreSQL user connected in plain"
    );
    let receiver = rig.receiver();
    let tailer = rig.tailer(&receiver.addr);

    // WHEN a clinic works
    assert!(rig.simulate(30, 3, 21, 0).wait().unwrap().success());
    rig.wait_quiet(&tailer, Duration::from_secs(120)).await;

    // THEN everything arrives exact, every link was TLS, and `ids verify` (which reaches
    // PostgreSQL with the receiver's config) finds the IDS tables equal to their definitions
    assert!(assert_stores_equal_source(&rig).await > 0);
    let (client, connection) = tokio_postgres::connect(&rig.pg_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let (sessions, encrypted): (i64, i64) = {
        let row = client
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a
                 JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'emr_tls'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(
        sessions > 0 && sessions == encrypted,
        "{encrypted} of {sessions} sessions on TLS"
    );
    common::assert_ids_verify(&rig);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_certificate_of_an_unknown_issuer_stops_the_receiver_with_the_reason() {
    // GIVEN a receiver told to trust another CA for its stores
    let tls = common::tls_dir();
    let mut rig = Rig::new("tls_store_ca").await;
    rig.stores_ca = Some(tls.join("other-ca.pem"));
    // WHEN it starts
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rig.receiver()));
    // THEN it exits, saying that the store's certificate was refused
    assert!(
        result.is_err(),
        "the receiver trusted a store it cannot verify"
    );
    let log = std::fs::read_to_string(rig.dir.join("receiver.log")).unwrap();
    assert!(log.to_lowercase().contains("unknownissuer"), "{log}");
}
