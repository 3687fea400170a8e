//! `parkguard check`: located errors and exit codes; and every shipped file under
//! firmware-config/ parses and validates.

use crate::support;

use std::path::Path;
use std::process::Command;

fn check(path: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_parkguard"))
        .args(["check", &path.display().to_string()])
        .output()
        .expect("run parkguard check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_key_wrong_type_and_dangling_profile_are_three_located_errors_exit_2() {
    let (_dir, path) = support::site(
        r#"[gateway]
profiles_dir = "profiles"

[[parks]]
id = "p"

[[enterprises]]
id = "e"
park = "p"

[[locations]]
id = "l"
enterprise = "e"

[[devices]]
id = "d1"
location = "l"
profile = "nb_smoke"
colour = "red"

[[devices]]
id = "d2"
location = "l"
profile = "no_such_profile"

[[mqtt]]
name = "m"
host = "localhost"
port = "1883"
[[mqtt.subscriptions]]
topic = "a/{device}"
profile = "nb_smoke"
"#,
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2, "{stderr}");
    let file = path.display().to_string();
    let problems: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&file)).collect();
    assert_eq!(problems.len(), 3, "{stderr}");
    assert_eq!(
        problems[0],
        format!("{file}:19:1: devices[0].colour: unknown field `colour`, expected one of `id`, `location`, `profile`, `kind`, `name`, `params`")
    );
    assert!(
        problems[1].starts_with(&format!(
            "{file}:24:1: devices[1].profile: no profile `no_such_profile`"
        )),
        "{}",
        problems[1]
    );
    assert_eq!(
        problems[2],
        format!("{file}:29:8: mqtt[0].port: invalid type: string \"1883\", expected u16")
    );
}

#[test]
fn problems_in_a_profile_are_located_in_the_profile_file() {
    let (dir, path) = support::site("[gateway]\nprofiles_dir = \"profiles\"\n");
    let profile = dir.path().join("profiles/broken.toml");
    std::fs::write(&profile, "kind = \"gas\"\n[payload]\n[[payload.fields]]\npointer = \"lel\"\nquantity = \"lel\"\ntype = \"decimal\"\n").expect("write");
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    assert!(
        stderr.contains(&format!(
            "{}:6:8: payload.fields[0].type: unknown variant `decimal`",
            profile.display()
        )),
        "{stderr}"
    );
}

#[test]
fn quantity_names_must_name_the_profiles_own_quantities_and_four_primary_at_most() {
    let (dir, path) = support::site("[gateway]\nprofiles_dir = \"profiles\"\n");
    let profile = dir.path().join("profiles/named.toml");
    let mut text = String::from("kind = \"meter\"\n[payload]\n");
    for q in ["a", "b", "c", "d", "e"] {
        text.push_str(&format!(
            "[[payload.fields]]\npointer = \"/{q}\"\nquantity = \"{q}\"\ntype = \"float\"\n"
        ));
    }
    for q in ["a", "b", "c", "d", "e"] {
        text.push_str(&format!(
            "[[quantities]]\nid = \"{q}\"\nzh = \"量{q}\"\nen = \"Q {q}\"\nprimary = true\n"
        ));
    }
    text.push_str(
        "[[quantities]]\nid = \"leakage\"\nzh = \"剩余电流\"\nen = \"Residual current\"\n",
    );
    text.push_str(
        "[[quantities]]\nid = \"a\"\nzh = \"\"\nen = \"A\"\nrole = \"counter\"\nprimary = true\n",
    );
    std::fs::write(&profile, text).expect("write");
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2, "{stderr}");
    let at = profile.display().to_string();
    for expected in [
        "quantities: 6 quantities are primary; the device list shows at most 4",
        "quantities[5].id: `leakage` is not a quantity of this profile's payload mapping or register map",
        "quantities[6].id: `a` is listed twice",
        "quantities[6]: a quantity needs its name in both `zh` and `en`",
        "quantities[6].primary: settings and counters are shown on the device page only",
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with(&at) && l.contains(expected)),
            "`{expected}` located in {at}:\n{stderr}"
        );
    }
    // A flag of a register's `bits` is a quantity of the profile too.
    assert!(!stderr.contains("acrel_adw300_3p"), "{stderr}");
}

#[test]
fn an_http_ingest_endpoint_needs_a_token_of_16_characters() {
    let (dir, path) = support::site(
        "[gateway]\nprofiles_dir = \"profiles\"\n[web]\nlisten = \"127.0.0.1:0\"\n\
         [[http_ingest]]\nname = \"ct\"\nplatform = \"ctwing\"\npath = \"/ingest/ct\"\n\
         token = { file = \"ct.token\" }\nprofile = \"ctwing_nb_smoke\"\n\
         [[http_ingest]]\nname = \"on\"\nplatform = \"onenet\"\npath = \"/ingest/on\"\n\
         token = { file = \"on.token\" }\nprofile = \"onenet_nb_gas\"\n",
    );
    // An empty token would let anyone push (`?token=`); a short one can be guessed.
    std::fs::write(dir.path().join("ct.token"), "").expect("write");
    std::fs::write(dir.path().join("on.token"), "short-token\n").expect("write");
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("http_ingest[0].token: the token has 0 characters; at least 16 are needed"),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("http_ingest[1].token: the token has 11 characters; at least 16 are needed"),
        "{stderr}"
    );
    std::fs::write(dir.path().join("ct.token"), "0123456789abcdef").expect("write");
    std::fs::write(dir.path().join("on.token"), "0123456789abcdef\n").expect("write");
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn platform_api_credentials_are_checked() {
    let (dir, path) = support::site(
        "[gateway]\nprofiles_dir = \"profiles\"\n[web]\nlisten = \"127.0.0.1:0\"\n\
         [[http_ingest]]\nname = \"on\"\nplatform = \"onenet\"\npath = \"/ingest/on\"\n\
         token = { file = \"token\" }\nprofile = \"hex_ack\"\n\
         [http_ingest.onenet_api]\nproduct_id = \"p\"\naccess_key = { file = \"key\" }\n\
         api_url = \"http://127.0.0.1:1/\"\n\
         [http_ingest.ctwing_api]\napp_key = \"k\"\napp_secret = { file = \"key\" }\n\
         master_key = { file = \"key\" }\nproduct_id = 1\n",
    );
    std::fs::write(dir.path().join("token"), "0123456789abcdef").expect("write");
    std::fs::write(dir.path().join("key"), "not base64!").expect("write");
    std::fs::write(
        dir.path().join("profiles/hex_ack.toml"),
        "kind = \"smoke\"\n[payload]\n[[payload.fields]]\npointer = \"/event\"\n\
         quantity = \"event\"\ntype = \"text\"\n\
         [ack]\nquantity = \"event\"\nstates = [\"alarm\"]\ncommand = { hex = \"A5\" }\n",
    )
    .expect("profile");
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2, "{stderr}");
    for expected in [
        "http_ingest[0].onenet_api.api_url: no trailing `/`",
        "http_ingest[0].ctwing_api: only a `ctwing` endpoint takes CTWing credentials",
        "http_ingest[0].onenet_api: profile `hex_ack` acknowledges with `hex` bytes",
        "http_ingest[0].onenet_api.access_key: is not Base64",
    ] {
        assert!(stderr.contains(expected), "{expected}\n{stderr}");
    }
}

#[test]
fn secrets_must_come_from_env_or_file_and_must_exist() {
    let (_dir, path) = support::site(
        "[gateway]\nprofiles_dir = \"profiles\"\n[[influx]]\nname = \"i\"\nurl = \"http://x\"\napi = \"v2\"\norg = \"o\"\nbucket = \"b\"\ntoken = { env = \"PARKGUARD_TEST_SURELY_UNSET\" }\n\n[[influx]]\nname = \"j\"\nurl = \"http://x\"\napi = \"v2\"\norg = \"o\"\nbucket = \"b\"\ntoken = \"inline-secret\"\n",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    assert!(
        stderr.contains(
            "influx[0].token: environment variable `PARKGUARD_TEST_SURELY_UNSET` is not set"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("influx[1].token: invalid type: string"),
        "inline secrets are refused: {stderr}"
    );
}

#[test]
fn every_shipped_site_and_profile_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/sites");
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).expect("sites folder") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (code, stdout, stderr) = check(&path);
            assert_eq!(code, 0, "{}:\n{stderr}", path.display());
            assert!(stdout.contains("valid"), "{stdout}");
            checked += 1;
        }
    }
    assert!(checked >= 2, "only {checked} site files");
    // Sites load every profile in the folder, so any broken profile fails the loop above; this
    // names the count so that a profile folder that went missing is noticed too.
    let config = parkguard::config::Config::load(&root.join("demo-park.toml")).expect("demo site");
    assert!(config.profiles.len() >= 2);
}

#[test]
fn check_plan_prints_the_fewest_reads_per_poll_class() {
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/sites/demo-park.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_parkguard"))
        .args(["check", "--plan", &site.display().to_string()])
        .output()
        .expect("run parkguard check --plan");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    // ADW300: 20..37 and 100..120 are 62 registers apart, beyond max_gap = 10: two reads.
    assert!(
        stdout.contains("acrel_adw300_3p [fast, every 1000 ms]: 2 request(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("Holding 20..37 (0x0014..0x0025, count 18): ua, ub, uc, ia, ib, ic, pa, pb, pc, p_total"), "{stdout}");
    assert!(
        stdout.contains("Input 8198..8211 (0x2006..0x2013, count 14)"),
        "{stdout}"
    );
}

#[test]
fn serial_line_settings_are_checked_and_only_allowed_on_rtu() {
    let (_dir, path) = support::site(&format!(
        "{}{}",
        support::site_header("l", ""),
        r#"[[devices]]
id = "d1"
location = "l"
profile = "arcm_combo_detector"

[[modbus]]
name = "rs485"
transport = "rtu"
address = "/dev/ttyUSB0"
serial = { baud = 100, parity = "even", stop_bits = 3 }
[[modbus.units]]
device = "d1"
unit_id = 1

[[modbus]]
name = "tcp"
transport = "tcp"
address = "10.0.0.5:502"
serial = { baud = 9600 }
[[modbus.units]]
device = "d1"
unit_id = 2
"#
    ));
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2, "{stderr}");
    for expected in [
        "modbus[0].serial.baud: must be 300 to 921600",
        "modbus[0].serial.stop_bits: must be 1 or 2",
        "modbus[1].serial: serial settings apply only to `transport = \"rtu\"`",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
    assert_eq!(stderr.matches("modbus[").count(), 3, "{stderr}");
}

#[test]
fn alert_channels_and_routes_are_checked() {
    let (_dir, path) = support::site(&format!(
        "{}{}",
        support::site_header("l", ""),
        r#"
[alerts]
web_url = "gw.example"
[[alerts.channels]]
name = "robot"
type = "dingtalk"
[[alerts.channels]]
name = "mail"
type = "email"
smtp_host = "mail.example"
from = "not an address"
[[alerts.channels]]
name = "state"
type = "mqtt"
mqtt = "nowhere"
[[alerts.routes]]
name = "a"
channels = ["robot", "pager"]
escalate_to = "b"
recipients = [{ name = "x", email = "x@" }]
[[alerts.routes]]
name = "b"
channels = ["mail"]
escalate_to = "a"
kinds = ["event"]
rate_limit = { max = 0, per_s = 60 }
"#
    ));
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2, "{stderr}");
    for expected in [
        "alerts.web_url: must start with http:// or https://",
        "alerts.channels[0]: type = \"dingtalk\" needs `url`",
        "alerts.channels[1].from: `not an address` is not an e-mail address",
        "alerts.channels[2].mqtt: no [[mqtt]] connection named `nowhere`",
        "alerts.routes[0].channels: no channel named `pager` in [[alerts.channels]]",
        "alerts.routes[0].recipients[0].email: `x@` is not an e-mail address",
        "alerts.routes[0].escalate_to: escalation comes back to this route (a cycle)",
        "alerts.routes[1].escalate_to: escalation comes back to this route (a cycle)",
        "alerts.routes[1].kinds: events are never pushed",
        "alerts.routes[1].rate_limit: `max` and `per_s` must be at least 1",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
}

#[test]
fn check_takes_the_site_as_option_or_environment_and_tells_usage_from_invalid_configuration() {
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/sites/demo-park.toml");
    let run = |args: &[&str], env: Option<&Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_parkguard"));
        command.args(args).env_remove("PARKGUARD_CONFIG");
        if let Some(file) = env {
            command.env("PARKGUARD_CONFIG", file);
        }
        let out = command.output().expect("run parkguard");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let site_text = site.display().to_string();
    assert_eq!(
        run(&["check", "-c", &site_text], None).0,
        0,
        "check -c FILE"
    );
    assert_eq!(run(&["check", "--config", &site_text], None).0, 0);
    assert_eq!(run(&["check"], Some(&site)).0, 0, "PARKGUARD_CONFIG");
    assert_eq!(run(&["check", &site_text], None).0, 0, "positional form");

    // Usage errors: 64, never 2, so that a service manager that stops restarting on an invalid
    // site file (RestartPreventExitStatus=2) is not confused by a typo on the command line.
    let (code, stderr) = run(&["check"], None);
    assert_eq!(code, 64, "no site given: {stderr}");
    let (code, stderr) = run(&["check", "--no-such-option", &site_text], None);
    assert_eq!(code, 64, "unknown option: {stderr}");
    let (code, stderr) = run(
        &["modbus", "read", "--tcp", "127.0.0.1:1", "--area", "x", "0"],
        None,
    );
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("holding, input, coil, discrete"),
        "{stderr}"
    );
    let (code, stderr) = run(&["token", "new", "x", "--role", "root"], None);
    assert_eq!(code, 64, "{stderr}");

    // An invalid site file: 2.
    let dir = tempfile::tempdir().expect("dir");
    let bad = dir.path().join("site.toml");
    std::fs::write(&bad, "[gateway]\nname = 5\n").expect("write");
    let (code, stderr) = run(&["check", "-c", &bad.display().to_string()], None);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("site.toml:2:8"), "located: {stderr}");

    // Help and version are no errors.
    assert_eq!(run(&["--help"], None).0, 0);
    assert_eq!(run(&["--version"], None).0, 0);
}

/// What a technician gives the city's monitoring centre at registration: every device's
/// address on the link, with its description as the centre will show it; and two devices at
/// one address are refused.
#[test]
fn check_components_lists_each_devices_address_towards_the_centre_and_refuses_collisions() {
    let site_text = |s1_address: u32| {
        format!(
            r#"{header}[[devices]]
id = "s1"
location = "l"
profile = "nb_smoke"
name = "A栋2层东侧走廊吸顶式光电感烟探测器"
[[devices]]
id = "g1"
location = "l"
profile = "gas_detector_lel"
[[devices]]
id = "m1"
location = "l"
profile = "adw300_json"

[[northbound]]
name = "city"
type = "gb26875"
centre = "203.0.113.5:9000"
centre_address = 1
device_address = 112233445566
[[northbound.components]]
device = "s1"
component_address = {s1_address}
"#,
            header = support::site_header("l", "")
        )
    };
    let (_dir, path) = support::site(&site_text(7));
    let out = Command::new(env!("CARGO_BIN_EXE_parkguard"))
        .args(["check", "--components", &path.display().to_string()])
        .output()
        .expect("run parkguard check --components");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("  ") && !l.contains("system type"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    // Ordered by address; the meter (system 0) first; the gas detector at its position 2;
    // the smoke detector where the site put it, its name cut to 31 bytes of GB18030.
    assert_eq!(rows[0][..5], ["0", "1", "17", "3", "m1"], "{stdout}");
    assert_eq!(rows[1][..5], ["1", "1", "11", "2", "g1"], "{stdout}");
    assert_eq!(rows[2][..5], ["1", "1", "42", "7", "s1"], "{stdout}");
    assert_eq!(rows[2][5], "A栋2层东侧走廊吸顶式光电感烟探", "{stdout}");

    let (_dir, path) = support::site(&site_text(2));
    let out = Command::new(env!("CARGO_BIN_EXE_parkguard"))
        .args(["check", &path.display().to_string()])
        .output()
        .expect("run parkguard check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("devices `s1` and `g1` have the same address")
            || stderr.contains("devices `g1` and `s1` have the same address"),
        "{stderr}"
    );
}
