//! Planner statistics that do not know a site being written are taken again
//! (`ids.stale_tables`, `ids::stats`): a new site's rows arriving after the statistics were
//! taken made the planner take the site for empty and pick any index that starts with
//! `site_id` for a probe by patient (a 30k-patient rebuild ran 6x slower).

mod common;

use emr_stream::receiver::ids;

/// A fresh database with the receiver's schema, and a client of it.
async fn store(prefix: &str) -> (deadpool_postgres::Pool, deadpool_postgres::Client) {
    let pool = common::pg_store(prefix, 2).await;
    let client = pool.get().await.unwrap();
    (pool, client)
}

/// The JSON plan of `query`.
async fn plan(client: &deadpool_postgres::Client, query: &str) -> String {
    let rows = client
        .simple_query(&format!("EXPLAIN (FORMAT JSON) {query}"))
        .await
        .unwrap();
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap()
}

/// The planner's estimate of `table`'s rows of `site`.
async fn estimate(client: &deadpool_postgres::Client, table: &str, site: i32) -> f64 {
    let plan = plan(
        client,
        &format!("SELECT 1 FROM {table} WHERE site_id = {site}"),
    )
    .await;
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    plan[0]["Plan"]["Plan Rows"].as_f64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_that_miss_a_written_site_are_taken_again() {
    let (pool, client) = store("ids_stats").await;
    // site 5 is there when the statistics are taken; site 7 comes after (an initial load)
    let insert = |site: i32, from: i32, n: i32| {
        format!(
            "INSERT INTO cdr.obs (site_id, lsn, obs_id, person_id, concept_id, obs_datetime, voided)
             SELECT {site}, 1, g, g / 10, 5089, '2024-01-01'::timestamp + g * interval '1 minute', 0
             FROM generate_series({from}, {from} + {n} - 1) g"
        )
    };
    client.batch_execute(&insert(5, 1, 5000)).await.unwrap();
    client.batch_execute("ANALYZE cdr.obs").await.unwrap();
    client
        .batch_execute(&insert(7, 100_000, 4000))
        .await
        .unwrap();
    let before = estimate(&client, "cdr.obs", 7).await;
    assert!(
        before < 100.0,
        "the planner takes site 7 for empty: {before}"
    );

    // the last ANALYZE is less than a minute old and the table has not doubled since: not
    // taken again yet (a site too small to be sampled must not be analysed over and over)
    let stale = ids::stats::analyze_stale(&pool, &[7]).await.unwrap();
    assert!(stale.is_empty(), "{stale:?}");
    client
        .batch_execute(
            "SELECT pg_stat_reset_single_table_counters('cdr.obs'::regclass);
             UPDATE cdr.obs SET lsn = 2 WHERE site_id = 7;
             SELECT pg_stat_force_next_flush()",
        )
        .await
        .unwrap();
    // counters reset: as if the last ANALYZE was long ago, with site 7's rows changed since
    let stale = ids::stats::analyze_stale(&pool, &[7]).await.unwrap();
    assert_eq!(stale, vec!["cdr.obs".to_string()]);
    let after = estimate(&client, "cdr.obs", 7).await;
    assert!(after > 2000.0, "site 7 known after ANALYZE: {after}");
    // known now: nothing stale for either site, and a site with no rows is never stale
    let stale = ids::stats::analyze_stale(&pool, &[5, 7, 9]).await.unwrap();
    assert!(stale.is_empty(), "{stale:?}");

    // a table analysed while empty and filled since (a rebuild into new tables): taken again
    // at once, whatever the time of its last ANALYZE
    client
        .batch_execute(
            "ANALYZE cdr.encounter;
             INSERT INTO cdr.encounter (site_id, lsn, encounter_id, patient_id, encounter_type,
                                        encounter_datetime, voided)
             SELECT 7, 1, g, g / 4, 7, '2024-01-01'::timestamp + g * interval '1 hour', 0
             FROM generate_series(1, 1000) g;
             SELECT pg_stat_force_next_flush()",
        )
        .await
        .unwrap();
    let stale = ids::stats::analyze_stale(&pool, &[7]).await.unwrap();
    assert_eq!(stale, vec!["cdr.encounter".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_the_statistics_miss_is_still_probed_by_patient() {
    // GIVEN statistics taken before a new site's rows came (its first batches, before the
    // receiver's keeper has analysed it)
    let (_pool, client) = store("ids_probe").await;
    let insert = |site: i32, from: i32, n: i32| {
        format!(
            "INSERT INTO cdr.obs (site_id, lsn, obs_id, person_id, encounter_id, concept_id,
                                  obs_datetime, value_datetime, voided)
             SELECT {site}, 1, g, g / 10, g / 5, CASE WHEN g % 3 = 0 THEN 5096 ELSE 5089 END,
                    '2024-01-01'::timestamp + g * interval '1 minute', '2024-03-01', 0
             FROM generate_series({from}, {from} + {n} - 1) g;
             INSERT INTO cdr.encounter (site_id, lsn, encounter_id, patient_id, encounter_type,
                                        encounter_datetime, voided, program_id)
             SELECT {site}, 1, g, g / 2, 7, '2024-01-01'::timestamp + g * interval '5 minutes', 0, 1
             FROM generate_series({from} / 5, ({from} + {n} - 1) / 5) g"
        )
    };
    client.batch_execute(&insert(5, 1, 50_000)).await.unwrap();
    client
        .batch_execute("ANALYZE cdr.obs; ANALYZE cdr.encounter")
        .await
        .unwrap();
    client
        .batch_execute(&insert(7, 100_000, 20_000))
        .await
        .unwrap();
    assert!(estimate(&client, "cdr.obs", 7).await < 100.0);

    // WHEN a recompute's definitions probe site 7's patients
    let mut plans = Vec::new();
    for call in [
        "ids.def_appointments(7, ARRAY[10001, 10002])",
        "ids.def_arv_dispensations(7, ARRAY[10001, 10002])",
        "ids.def_program_states(7, ARRAY[10001, 10002])",
        "ids.def_patient_visits(7, ARRAY[10001, 10002])",
        "ids.def_art_status(7, ARRAY[10001, 10002])",
    ] {
        plans.push((call, plan(&client, &format!("SELECT * FROM {call}")).await));
    }

    // THEN every probe goes through an index by its key or patient, none through one that
    // holds only the site (which read every row of the site at each probe: a four-site
    // bench's applies stalled 60 s)
    for (call, plan) in &plans {
        // (inlined: the plan shows the probes themselves)
        assert!(plan.contains("\"Index Name\""), "{call}: {plan}");
        assert!(
            !plan.contains("\"Index Cond\": \"(site_id = 7)\""),
            "{call}: {plan}"
        );
    }
    assert!(plans[0].1.contains("\"obs_person_day\""), "{}", plans[0].1);
    assert!(plans[0].1.contains("\"encounter_pkey\""), "{}", plans[0].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patients_days_are_probed_through_the_visits_primary_key() {
    // GIVEN a site's visits, many patients a day, in tables the statistics have not seen yet
    // (a backlog's first batches), and the recompute's planner settings
    let (_pool, client) = store("ids_visit_probe").await;
    client
        .batch_execute(
            "INSERT INTO ids.patient_visits (site_id, patient_id, visit_date, encounters)
             SELECT 7, p, '2024-01-01'::date + d, 1
             FROM generate_series(1, 2000) p, generate_series(0, 9) d;
             INSERT INTO ids.art_status (site_id, patient_id, gender, transfer_in)
             SELECT 7, p, 'F', false FROM generate_series(1, 2000) p;
             SET random_page_cost = 1.1; SET enable_seqscan = off",
        )
        .await
        .unwrap();

    // WHEN the day counts of a dirty set are planned (before and after every recompute)
    let plan = plan(
        &client,
        "SELECT * FROM ids.visit_counts(7, ARRAY[11, 12, 13], \
         ARRAY['2024-01-03', '2024-01-04', NULL]::date[])",
    )
    .await;

    // THEN each probe reads the patient's days through the primary key, not the whole site's
    // day through patient_visits_day (750 rows read per probe in a backlog's batches)
    assert!(plan.contains("\"patient_visits_pkey\""), "{plan}");
    assert!(!plan.contains("\"patient_visits_day\""), "{plan}");
    let counts = client
        .query(
            "SELECT visit_date::text, n FROM ids.visit_counts(7, ARRAY[11, 12, 13], \
             ARRAY['2024-01-03', '2024-01-04', NULL]::date[]) ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let counts: Vec<(String, i64)> = counts.iter().map(|r| (r.get(0), r.get(1))).collect();
    // patients 11 and 12 on their day, patient 13 on every day
    let mut expected: Vec<(String, i64)> =
        (1..=10).map(|d| (format!("2024-01-{d:02}"), 1)).collect();
    expected[2].1 = 2;
    expected[3].1 = 2;
    assert_eq!(counts, expected);
}
