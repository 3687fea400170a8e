//! `parkguard backup` while the daemon runs and keeps writing: the copy opens, holds the alarm
//! journal with its hash chain intact, and an existing file is never overwritten.

use crate::support;

use std::process::Command;
use std::time::Duration;

use parkguard::config::Config;
use parkguard::pipeline::Gateway;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_of_a_running_daemon_is_complete_and_never_overwrites() {
    let mosquitto = mosquitto();
    let text = format!(
        "{}[[devices]]\nid = \"m1\"\nlocation = \"l\"\nprofile = \"adw300_json\"\n\
         [[rule_overrides]]\nrule = \"R1\"\non_delay_s = 0\noff_delay_s = 0\n\
         [[mqtt]]\nname = \"park\"\nhost = \"127.0.0.1\"\nport = {}\n\
         [[mqtt.subscriptions]]\ntopic = \"park/{{park}}/meter/{{device}}/up\"\nprofile = \"adw300_json\"\n",
        site_header("l", "store = \"live.db\""),
        mosquitto.port
    );
    let (dir, path) = site(&text);
    let config = Config::load(&path).expect("valid site");
    let gateway = Gateway::start(config).await.expect("start");
    wait_subscribed(&gateway, "park", 1).await;
    // Alarms raised and cleared: journal entries.
    for leakage in [650.0, 20.0, 650.0, 20.0] {
        mosquitto_pub(
            mosquitto.port,
            "park/p/meter/m1/up",
            &[meter(leakage).as_bytes()],
        );
    }
    let live = parkguard::store::Store::open(&dir.path().join("live.db")).expect("store");
    eventually(
        "raised and cleared twice, in the journal",
        Duration::from_secs(10),
        || async { live.journal(Some("R1/m1"), 100).expect("journal").len() >= 4 },
    )
    .await;
    drop(live);
    // Telemetry keeps arriving while the backup runs.
    let port = mosquitto.port;
    let writer = tokio::task::spawn_blocking(move || {
        for _ in 0..20 {
            mosquitto_pub(port, "park/p/meter/m1/up", &[meter(30.0).as_bytes()]);
        }
    });
    let store = dir.path().join("live.db");
    let copy = dir.path().join("copy.db");
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_parkguard"))
                .args(&args)
                .output()
                .expect("run parkguard")
        })
    };
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let store_arg = store.display().to_string();
    let copy_arg = copy.display().to_string();
    let out = run(args(&["backup", "--store", &store_arg, &copy_arg]))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("journal intact ("), "{stdout}");
    writer.await.expect("writer");

    let entries: u64 = stdout
        .split("journal intact (")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("entry count");
    assert!(entries >= 4, "raised and cleared twice: {stdout}");
    let verify = run(args(&["journal", "verify", "--store", &copy_arg]))
        .await
        .expect("join");
    assert!(verify.status.success(), "{verify:?}");

    let again = run(args(&["backup", "--store", &store_arg, &copy_arg]))
        .await
        .expect("join");
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists; give a new file"));
    gateway.shutdown().await;
}
