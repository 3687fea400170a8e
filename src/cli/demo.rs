//! `parkguard demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use parkguard::pipeline::Gateway;

use super::{load, toml_string, usage_error, wait_for_signal};

/// `parkguard demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Folder for the demo's site file, profiles and store (created; reused next time, so
    /// alarms survive a restart like in a real site).
    #[arg(long, default_value = "parkguard-demo")]
    dir: PathBuf,
    /// Where the web UI listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Where the embedded MQTT broker listens (the simulated sensors publish to it; so can you).
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt_listen: String,
    /// Number of simulated enterprises.
    #[arg(long, default_value_t = 20)]
    enterprises: usize,
    /// Password of the logins `operator`, `viewer` and `admin` (random when not given).
    #[arg(long, env = "PARKGUARD_DEMO_PASSWORD")]
    password: Option<String>,
    /// Also write to this InfluxDB (e.g. http://127.0.0.1:8086): give --influx-db for
    /// InfluxDB 1.x, or --influx-bucket and --influx-org with the token in
    /// PARKGUARD_INFLUX_TOKEN for 2.x.
    #[arg(long)]
    influx_url: Option<String>,
    #[arg(long, requires = "influx_url", conflicts_with = "influx_bucket")]
    influx_db: Option<String>,
    #[arg(long, requires_all = ["influx_url", "influx_org"])]
    influx_bucket: Option<String>,
    #[arg(long, requires = "influx_bucket")]
    influx_org: Option<String>,
}

impl DemoArgs {
    pub fn run(self) -> ExitCode {
        let influx = match (
            self.influx_url,
            self.influx_db,
            self.influx_bucket,
            self.influx_org,
        ) {
            (None, ..) => None,
            (Some(url), Some(db), _, _) => Some(format!(
                "[[influx]]\nname = \"influx\"\nurl = {}\napi = \"v1\"\ndatabase = {}\n",
                toml_string(&url),
                toml_string(&db)
            )),
            (Some(url), None, Some(bucket), Some(org)) => Some(format!(
                "[[influx]]\nname = \"influx\"\nurl = {}\napi = \"v2\"\nbucket = {}\norg = {}\n\
                 token = {{ env = \"PARKGUARD_INFLUX_TOKEN\" }}\n",
                toml_string(&url),
                toml_string(&bucket),
                toml_string(&org)
            )),
            (Some(_), None, _, _) => {
                return usage_error(
                    "--influx-url needs --influx-db (1.x) or --influx-bucket and --influx-org (2.x)",
                );
            }
        };
        demo(parkguard::sim::park::DemoOptions {
            dir: self.dir,
            enterprises: self.enterprises.clamp(1, 200),
            web_listen: self.listen,
            mqtt_listen: self.mqtt_listen,
            modbus_port: 0,
            password: self
                .password
                .unwrap_or_else(parkguard::sim::park::demo_password),
            influx,
        })
    }
}

pub fn demo(mut options: parkguard::sim::park::DemoOptions) -> ExitCode {
    use parkguard::sim::park;
    let runtime = match super::multi_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
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
                std::process::exit(i32::from(super::EXIT_TASK_FAILED));
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
