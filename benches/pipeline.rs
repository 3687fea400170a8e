//! Hot-path benchmarks. Issue target: JSON payload decode plus line-protocol encode of a
//! 12-quantity meter message at 300,000 messages per second or more on one core.
//!
//! Criterion measures both paths; then, under `cargo bench`, the median of five timed runs of
//! 100,000 messages is printed against the target (PASS/FAIL) and a miss exits non-zero.

use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, Criterion, Throughput};
use parkguard::config::{Profile, SourceFile};
use parkguard::decode::payload::PayloadDecoder;
use parkguard::model::Tags;
use parkguard::sinks::line_protocol;

fn meter_decoder() -> PayloadDecoder {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/profiles/adw300_json.toml");
    let profile: Profile = SourceFile::read(&path)
        .expect("profile file")
        .deserialize()
        .expect("profile parses");
    PayloadDecoder::new(
        profile.payload.as_ref().expect("payload mapping"),
        profile.measurement(),
    )
    .expect("valid pointers")
}

#[allow(dead_code)]
mod support;

const TARGET_MESSAGES_PER_S: f64 = 300_000.0;

fn meter_tags() -> Arc<Tags> {
    Arc::new(Tags {
        park: "xinghe".into(),
        enterprise: "hongda".into(),
        location: "3号楼配电箱".into(),
        device: "adw300-0001".into(),
        kind: "meter".into(),
        profile: "adw300_json".into(),
        extra: vec![],
    })
}

// Received a second after the meter's own timestamp.
const RECEIVED_NS: i64 = 1_718_000_001_250_000_000;
const PAYLOAD: &[u8] = br#"{"ts":1718000000250,"ua":230.1,"ub":229.8,"uc":231.0,"ia":12.5,"ib":11.0,"ic":13.25,"p_total":8350,"leakage":120,"t":[35.5,36.0,34.25,41.0]}"#;

fn decode_and_encode(c: &mut Criterion) {
    let decoder = meter_decoder();
    let tags = meter_tags();
    let payload = PAYLOAD;
    let mut group = c.benchmark_group("meter_message");
    group.throughput(Throughput::Elements(1));
    let mut readings = Vec::with_capacity(16);
    let mut problems = Vec::new();
    let mut out = String::with_capacity(1024);
    group.bench_function("json_decode_plus_line_protocol_encode", |b| {
        b.iter(|| {
            readings.clear();
            out.clear();
            let parsed = decoder.parse(payload).expect("valid payload");
            decoder.readings(&parsed, &tags, RECEIVED_NS, &mut readings, &mut problems);
            line_protocol::encode(&readings, &mut out);
            assert_eq!(readings.len(), 12);
            std::hint::black_box(out.len())
        })
    });
    group.bench_function("line_protocol_encode_only", |b| {
        readings.clear();
        let parsed = decoder.parse(payload).expect("valid payload");
        decoder.readings(&parsed, &tags, RECEIVED_NS, &mut readings, &mut problems);
        b.iter(|| {
            out.clear();
            line_protocol::encode(&readings, &mut out);
            std::hint::black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, decode_and_encode);

/// Decode plus encode, timed: the median of five runs of 100,000 messages.
fn messages_per_second() -> f64 {
    let decoder = meter_decoder();
    let tags = meter_tags();
    let mut readings = Vec::with_capacity(16);
    let mut problems = Vec::new();
    let mut out = String::with_capacity(1024);
    const MESSAGES: u32 = 100_000;
    let mut rates: Vec<f64> = (0..5)
        .map(|_| {
            let started = std::time::Instant::now();
            for _ in 0..MESSAGES {
                readings.clear();
                out.clear();
                let parsed = decoder.parse(PAYLOAD).expect("valid payload");
                decoder.readings(&parsed, &tags, RECEIVED_NS, &mut readings, &mut problems);
                line_protocol::encode(&readings, &mut out);
                std::hint::black_box(out.len());
            }
            f64::from(MESSAGES) / started.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[2]
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rate = messages_per_second();
    let mut targets = support::Targets::new("pipeline");
    targets.report(
        "JSON decode + line-protocol encode, time per 12-reading message",
        format!("{:.2} µs", 1e6 / rate),
    );
    targets.at_least(
        "JSON decode + line-protocol encode on one core",
        rate,
        TARGET_MESSAGES_PER_S,
        "messages/s",
    );
    targets.finish_or_exit();
}
