//! `parkguard demo`.

use std::process::ExitCode;

use parkguard::pipeline::Gateway;

use crate::{load, wait_for_signal};

pub fn demo(mut options: parkguard::sim::park::DemoOptions) -> ExitCode {
    use parkguard::sim::park;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        // The detectors' Modbus server first, on a free port, so the poller finds it.
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("cannot open the simulated detectors' port: {err}");
                return ExitCode::FAILURE;
            }
        };
        options.modbus_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let bus = park::modbus_bus(options.enterprises);
        let modbus = tokio::spawn(bus.clone().serve_tcp(listener));
        let path = match park::write_site(&options) {
            Ok(path) => path,
            Err(err) => {
                eprintln!(
                    "cannot write the demo site into {}: {err}",
                    options.dir.display()
                );
                return ExitCode::FAILURE;
            }
        };
        let config = match load(&path) {
            Ok(config) => config,
            Err(code) => return code,
        };
        let gateway = match Gateway::start(config).await {
            Ok(gateway) => gateway,
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "Startup failed.");
                return ExitCode::FAILURE;
            }
        };
        let url = gateway
            .web
            .as_ref()
            .map(|web| format!("http://{}/", web.address))
            .unwrap_or_default();
        let (mqtt_host, mqtt_port) = match options.mqtt_listen.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), port.parse().unwrap_or(1883)),
            None => ("127.0.0.1".to_string(), 1883),
        };
        let cancel = tokio_util::sync::CancellationToken::new();
        let devices = {
            let cancel = cancel.clone();
            let enterprises = options.enterprises;
            tokio::spawn(async move {
                park::run(enterprises, mqtt_host, mqtt_port, &bus, cancel).await;
            })
        };
        println!();
        println!(
            "parkguard demo is running: {} simulated enterprises.",
            options.enterprises
        );
        println!("  Web UI:  {url}");
        println!(
            "  Login:   operator / {}   (also viewer, admin with the same password)",
            options.password
        );
        println!(
            "  MQTT:    {} (embedded broker; the simulated sensors publish here)",
            options.mqtt_listen
        );
        println!(
            "  Pushes:  active alarms retained on parkguard/alarms/# and parkguard/fire/# of that broker"
        );
        println!("  Files:   {}", options.dir.display());
        println!("Alarms begin within a minute. Press Ctrl-C to stop.");
        println!();
        tokio::select! {
            _ = wait_for_signal() => {}
            failure = gateway.failed() => {
                tracing::error!(task = %failure.task, cause = %failure.cause, "A task of the gateway failed; the demo stops.");
                std::process::exit(super::ops::EXIT_TASK_FAILED);
            }
        }
        tracing::info!("Shutting down.");
        cancel.cancel();
        let _ = devices.await;
        gateway.shutdown().await;
        modbus.abort();
        ExitCode::SUCCESS
    })
}
