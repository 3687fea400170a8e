//! Bounded fuzzing on the stable toolchain: each target mutates the seeds in
//! `tests/fuzz/<target>/` (bit flips, byte edits, splices, boundary numbers, deep nesting) for
//! `PARKGUARD_FUZZ_SECONDS` (default 8) and checks that nothing panics, hangs or answers 500.
//! Targets: the JSON payload decoder, register decoding, topic templates, the config loader and
//! every HTTP body the API parses. An input that fails is written to `target/fuzz-failures/`
//! so that it can be added to the seeds.

use crate::support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn budget() -> Duration {
    let seconds = std::env::var("PARKGUARD_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(8.0);
    Duration::from_secs_f64(seconds)
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

const INTERESTING: &[&[u8]] = &[
    b"NaN",
    b"-Infinity",
    b"1e400",
    b"-0",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"null",
    b"\"\"",
    b"[]",
    b"{}",
    b"\\u0000",
    b"\xff\xfe",
    b"\xe4\xb8\xad",
    b"{park}",
    b"+",
    b"#",
    b"0x7FFF",
    b"\n[[",
    b"\"a\":",
];

/// One mutation of `input` (or a splice with `other`).
fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let at = if out.is_empty() {
            0
        } else {
            rng.random_range(0..out.len())
        };
        match rng.random_range(0..8) {
            0 if !out.is_empty() => out[at] ^= 1 << rng.random_range(0..8),
            1 if !out.is_empty() => out[at] = rng.random(),
            2 if !out.is_empty() => {
                let end = (at + rng.random_range(1..16)).min(out.len());
                out.drain(at..end);
            }
            3 => {
                let token = INTERESTING[rng.random_range(0..INTERESTING.len())];
                out.splice(at..at, token.iter().copied());
            }
            4 if !other.is_empty() => {
                let from = rng.random_range(0..other.len());
                let end = (from + rng.random_range(1..64)).min(other.len());
                out.splice(at..at, other[from..end].iter().copied());
            }
            5 => {
                let depth = rng.random_range(1..2000);
                let (open, close) = if rng.random() {
                    (b'[', b']')
                } else {
                    (b'{', b'}')
                };
                let mut nest = vec![open; depth];
                if rng.random() {
                    nest.extend(std::iter::repeat_n(close, depth));
                }
                out.splice(at..at, nest);
            }
            6 if !out.is_empty() => {
                let end = (at + rng.random_range(1..32)).min(out.len());
                let copy = out[at..end].to_vec();
                for _ in 0..rng.random_range(1..64) {
                    out.splice(at..at, copy.iter().copied());
                }
            }
            _ => out.push(rng.random()),
        }
    }
    out.truncate(1 << 20);
    out
}

/// Keeps a failing input for the record.
fn keep(target: &str, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let name = format!("{target}-{:016x}", {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        input.hash(&mut h);
        h.finish()
    });
    let path = dir.join(name);
    let _ = std::fs::write(&path, input);
    path
}

/// Runs `check` on mutated seeds until the budget is spent; each input must return within
/// `slow`, without panicking. Returns how many inputs ran.
fn fuzz(target: &str, slow: Duration, mut check: impl FnMut(&[u8])) -> u64 {
    let seeds = seeds(target);
    let mut rng = StdRng::seed_from_u64(
        std::env::var("PARKGUARD_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random),
    );
    let deadline = Instant::now() + budget();
    let mut runs = 0;
    let mut pool = seeds.clone();
    while Instant::now() < deadline {
        let base = &pool[rng.random_range(0..pool.len())];
        let other = &seeds[rng.random_range(0..seeds.len())];
        let input = mutate(&mut rng, base, other);
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&input)));
        let took = started.elapsed();
        if outcome.is_err() {
            panic!("{target}: panicked on {}", keep(target, &input).display());
        }
        assert!(
            took < slow,
            "{target}: took {took:?} on {}",
            keep(target, &input).display()
        );
        // Keep some mutants so that mutations compound.
        if pool.len() < 256 && rng.random_ratio(1, 16) {
            pool.push(input);
        }
        runs += 1;
    }
    eprintln!("{target}: {runs} inputs in {:?}", budget());
    runs
}

fn tags() -> Arc<parkguard::model::Tags> {
    Arc::new(parkguard::model::Tags {
        park: "p".into(),
        enterprise: "e".into(),
        location: "l".into(),
        device: "d".into(),
        kind: String::new(),
        profile: String::new(),
        extra: Vec::new(),
    })
}

/// Every shipped profile, as a site loads them.
fn shipped_profiles() -> std::collections::BTreeMap<String, parkguard::config::Profile> {
    let (_dir, path) = support::site(&support::site_header("l", ""));
    parkguard::config::Config::load(&path)
        .unwrap_or_else(|p| panic!("{p:#?}"))
        .profiles
}

#[test]
fn payload_decoder() {
    let profiles = shipped_profiles();
    let decoders: Vec<parkguard::decode::payload::PayloadDecoder> = profiles
        .values()
        .filter_map(|p| {
            parkguard::decode::payload::PayloadDecoder::new(p.payload.as_ref()?, p.measurement())
                .ok()
        })
        .collect();
    assert!(decoders.len() >= 2);
    let tags = tags();
    let runs = fuzz("payload", Duration::from_millis(500), |input| {
        for decoder in &decoders {
            if let Ok(parsed) = decoder.parse(input) {
                let _ = decoder.device_id(&parsed);
                let (mut out, mut problems) = (Vec::new(), Vec::new());
                decoder.readings(
                    &parsed,
                    &tags,
                    1_718_000_000_000_000_000,
                    &mut out,
                    &mut problems,
                );
                for r in &out {
                    if let parkguard::model::Value::Float(f) = r.value {
                        assert!(f.is_finite(), "a non-finite reading: {r:?}");
                    }
                }
            }
        }
    });
    assert!(runs > 100);
}

#[test]
fn register_decoding() {
    use parkguard::decode::registers::{
        decode_raw, DataType, RegisterDecoder, RegisterMapping, WordOrder,
    };
    let types = [
        DataType::Bit,
        DataType::Bool,
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::U64,
        DataType::I64,
        DataType::F32,
        DataType::F64,
        DataType::String,
    ];
    let orders = [
        WordOrder::ABCD,
        WordOrder::CDAB,
        WordOrder::BADC,
        WordOrder::DCBA,
    ];
    let profiles = shipped_profiles();
    let mappings: Vec<RegisterMapping> = profiles
        .values()
        .filter_map(|p| p.modbus.as_ref())
        .flat_map(|m| m.registers.iter().cloned())
        .collect();
    let decoders: Vec<RegisterDecoder> = mappings
        .iter()
        .map(|m| RegisterDecoder::new(m, 0))
        .collect();
    let tags = tags();
    let measurement: Arc<str> = Arc::from("m");
    let runs = fuzz("registers", Duration::from_millis(200), |input| {
        let words: Vec<u16> = input
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
            .collect();
        for t in types {
            for o in orders {
                let _ = decode_raw(&words, t, o);
            }
        }
        for decoder in &decoders {
            let width = usize::from(decoder.width()).min(words.len());
            let mut out = Vec::new();
            decoder.readings(&words[..width], &tags, &measurement, 0, &mut out);
            decoder.readings(&words, &tags, &measurement, 0, &mut out);
        }
    });
    assert!(runs > 100);
}

#[test]
fn topic_templates() {
    use parkguard::config::topic::TopicTemplate;
    let runs = fuzz("topics", Duration::from_millis(200), |input| {
        let text = String::from_utf8_lossy(input);
        let (template, topic) = text.split_once('\n').unwrap_or((&text, "a/b/c"));
        if let Ok(t) = TopicTemplate::parse(template) {
            let _ = t.filter();
            let _ = t.capture(topic);
            let _ = t.capture(template);
        }
    });
    assert!(runs > 100);
}

#[test]
fn config_loader() {
    let (dir, path) = support::site("");
    let runs = fuzz("config", Duration::from_secs(2), |input| {
        std::fs::write(&path, input).expect("write site");
        if let Ok(config) = parkguard::config::Config::load(&path) {
            let _ = config.warnings();
        }
    });
    drop(dir);
    assert!(runs > 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bodies() {
    use parkguard::config::Config;
    use parkguard::pipeline::Gateway;
    let token = parkguard::web::random_token();
    let hash = parkguard::web::hash_password("pw").expect("hash");
    let (_dir, path) = support::site(&format!(
        "{header}[[devices]]\nid = \"s1\"\nlocation = \"l\"\nprofile = \"nb_smoke\"\n\
         [web]\nlisten = \"127.0.0.1:0\"\nmax_connections_per_address = 1000\n\
         [[web.users]]\nname = \"admin\"\nrole = \"admin\"\npassword_hash = \"{hash}\"\n\
         [[web.tokens]]\nname = \"fuzz\"\nrole = \"admin\"\ntoken_sha256 = \"{}\"\n",
        parkguard::web::token_sha256_hex(&token),
        header = support::site_header("l", ""),
    ));
    let gateway = Gateway::start(Config::load(&path).expect("site"))
        .await
        .expect("start");
    let url = support::web_url(&gateway);
    let posts: Vec<&str> = parkguard::web::route_table()
        .into_iter()
        .filter(|(m, _, _)| m == axum::http::Method::POST)
        .map(|(_, p, _)| p)
        .collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let seeds = seeds("http");
    let mut rng = StdRng::seed_from_u64(rand::random());
    let deadline = Instant::now() + budget();
    let mut runs = 0u64;
    while Instant::now() < deadline {
        let base = &seeds[rng.random_range(0..seeds.len())];
        let other = &seeds[rng.random_range(0..seeds.len())];
        let body = mutate(&mut rng, base, other);
        let route = posts[rng.random_range(0..posts.len())];
        let answer = client
            .post(format!("{url}{route}"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        let status = match answer {
            Ok(a) => a.status().as_u16(),
            Err(err) => panic!(
                "{route}: no answer ({err}) to {}",
                keep("http", &body).display()
            ),
        };
        assert!(
            status < 500 || status == 503,
            "{route}: {status} on {}",
            keep("http", &body).display()
        );
        runs += 1;
    }
    eprintln!("http: {runs} bodies in {:?}", budget());
    let health = client
        .get(format!("{url}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    assert!(runs > 50);
    gateway.shutdown().await;
}
