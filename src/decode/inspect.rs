//! Commissioning views of raw Modbus words (pure): the words in hex, decimal and bits, and the
//! same words decoded as every numeric type in all four word orders side by side, so that a
//! technician can see which type, order and scale give the value on the device's display.

use std::fmt::Write as _;

use super::registers::{decode_raw, DataType, Raw, WordOrder};

fn show(raw: Option<Raw>) -> String {
    match raw {
        Some(Raw::Int(v)) => v.to_string(),
        Some(Raw::Float(v)) if v != 0.0 && (v.abs() < 1e-6 || v.abs() >= 1e15) => {
            // Wrong word orders make denormals and giants; show them as such, not as 0.
            format!("{v:.3e}")
        }
        Some(Raw::Float(v)) if v.is_finite() => {
            // Short but exact enough to recognise a reading: 7 significant digits for f32.
            let text = format!("{v:.6}");
            let text = text.trim_end_matches('0').trim_end_matches('.');
            if text.is_empty() || text == "-" {
                "0".into()
            } else {
                text.into()
            }
        }
        Some(Raw::Float(v)) => v.to_string(),
        Some(Raw::Text(t)) => t,
        None => "-".into(),
    }
}

/// The words one per line: address (decimal and hex, as the device manual may count them),
/// hex, u16, i16 and the bits, plus two ASCII characters.
pub fn words_table(first_address: u16, words: &[u16]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>7} {:>7}  {:>6}  {:>6}  {:>6}  {:<19}  ascii",
        "address", "hex", "word", "u16", "i16", "bits 15..0"
    );
    for (i, w) in words.iter().enumerate() {
        let address = first_address.wrapping_add(i as u16);
        let bits = format!("{w:016b}");
        let bits = format!(
            "{} {} {} {}",
            &bits[0..4],
            &bits[4..8],
            &bits[8..12],
            &bits[12..16]
        );
        let ascii: String = w
            .to_be_bytes()
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    char::from(b)
                } else {
                    '.'
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "{address:>7} {:>7}  0x{w:04X}  {w:>6}  {:>6}  {bits}  {ascii}",
            format!("0x{address:04X}"),
            *w as i16
        );
    }
    out
}

/// Every 32-bit and 64-bit type starting at each address, in the four word orders.
pub fn every_order_table(first_address: u16, words: &[u16]) -> String {
    let mut out = String::new();
    for (width, types) in [
        (2usize, [DataType::U32, DataType::I32, DataType::F32]),
        (4usize, [DataType::U64, DataType::I64, DataType::F64]),
    ] {
        if words.len() < width {
            continue;
        }
        let _ = writeln!(
            out,
            "\n{}-bit values starting at each address (A = high byte of the first word):",
            width * 16
        );
        let _ = write!(out, "{:>7}  {:<4}", "address", "type");
        for order in WordOrder::ALL {
            let _ = write!(out, "  {:>22}", format!("{order:?}"));
        }
        out.push('\n');
        for start in 0..=(words.len() - width) {
            let chunk = &words[start..start + width];
            let address = first_address.wrapping_add(start as u16);
            for (row, data_type) in types.iter().enumerate() {
                let label = if row == 0 {
                    address.to_string()
                } else {
                    String::new()
                };
                let _ = write!(
                    out,
                    "{label:>7}  {:<4}",
                    format!("{data_type:?}").to_lowercase()
                );
                for order in WordOrder::ALL {
                    let _ = write!(out, "  {:>22}", show(decode_raw(chunk, *data_type, order)));
                }
                out.push('\n');
            }
        }
    }
    out
}

/// Coils or discrete inputs, eight to a line.
pub fn bits_table(first_address: u16, bits: &[bool]) -> String {
    let mut out = String::new();
    for (line, chunk) in bits.chunks(8).enumerate() {
        let address = first_address.wrapping_add((line * 8) as u16);
        let _ = write!(out, "{address:>7} {:>7} ", format!("0x{address:04X}"));
        for b in chunk {
            out.push_str(if *b { " 1" } else { " 0" });
        }
        out.push('\n');
    }
    out
}

/// One quantity of a profile test: what the device gave and whether it is plausible.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProfileCheck {
    pub quantity: String,
    pub value: String,
    pub unit: String,
    pub quality: &'static str,
    /// `ok`, `OUT OF RANGE [lo, hi]`, `INVALID`, `NO ANSWER: ...`, `flag set`, ...
    pub verdict: String,
}

/// Judges decoded readings against the profile's ranges (pure). `mappings` are the profile's
/// registers; readings of named bits are judged as flags.
pub fn check_readings(
    mappings: &[super::registers::RegisterMapping],
    readings: &[crate::model::Reading],
) -> Vec<ProfileCheck> {
    use crate::model::{Quality, Value};
    readings
        .iter()
        .map(|r| {
            let mapping = mappings.iter().find(|m| m.quantity == *r.quantity);
            let is_float = mapping.is_some_and(|m| {
                matches!(
                    m.data_type,
                    super::registers::DataType::F32 | super::registers::DataType::F64
                )
            });
            let suspicious_float = is_float
                && r.value.as_f64().is_some_and(|v| {
                    // What the wrong word order makes of an ordinary reading: a denormal or an
                    // astronomically large number.
                    v != 0.0 && (v.abs() < 1e-9 || v.abs() > 1e15)
                });
            let verdict = match (r.quality, &r.value, mapping.and_then(|m| m.range)) {
                (Quality::Invalid, _, _) => "INVALID (sensor open or short?)".to_string(),
                (Quality::Good, _, _) if suspicious_float => {
                    "IMPLAUSIBLE float: check the word order".to_string()
                }
                (Quality::Good, Value::Bool(true), _) if mapping.is_none() => "flag SET".into(),
                (Quality::Good, Value::Bool(false), _) if mapping.is_none() => "flag clear".into(),
                (Quality::Good, value, Some((lo, hi))) => match value.as_f64() {
                    Some(v) if v >= lo && v <= hi => format!("ok (range {lo}..{hi})"),
                    Some(_) => format!("OUT OF RANGE {lo}..{hi}: check type, word order, scale"),
                    None => "ok".into(),
                },
                (Quality::Good, _, None) => "ok".into(),
                (quality, _, _) => quality.as_str().to_string(),
            };
            ProfileCheck {
                quantity: r.quantity.to_string(),
                value: r.value.to_string(),
                unit: r.unit.as_deref().unwrap_or("").to_string(),
                quality: r.quality.as_str(),
                verdict,
            }
        })
        .collect()
}

/// The checks as a table.
pub fn checks_table(checks: &[ProfileCheck]) -> String {
    let width = checks
        .iter()
        .map(|c| c.quantity.chars().count())
        .max()
        .unwrap_or(8)
        .max(8);
    let mut out = format!(
        "{:<width$}  {:>14}  {:<6}  {:<10}  check\n",
        "quantity", "value", "unit", "quality"
    );
    for c in checks {
        let _ = writeln!(
            out,
            "{:<width$}  {:>14}  {:<6}  {:<10}  {}",
            c.quantity, c.value, c.unit, c.quality, c.verdict
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_swapped_float_reads_right_only_in_cdab() {
        let bits = 230.5f32.to_bits();
        let words = [(bits & 0xffff) as u16, (bits >> 16) as u16];
        let table = every_order_table(8, &words);
        let f32_row = table.lines().find(|l| l.contains("f32")).expect("f32 row");
        let cells: Vec<&str> = f32_row.split_whitespace().collect();
        // type, ABCD, CDAB, BADC, DCBA (the address labels only the first row of a group)
        assert_eq!(cells[0], "f32");
        assert_ne!(cells[1], "230.5");
        assert_eq!(cells[2], "230.5");
    }

    #[test]
    fn words_show_address_in_decimal_and_hex_and_signed_value() {
        let table = words_table(100, &[0xFFFE]);
        assert!(table.contains("    100  0x0064  0xFFFE   65534      -2  1111 1111 1111 1110"));
    }

    #[test]
    fn a_value_outside_the_profile_range_is_flagged() {
        use crate::decode::registers::{RegisterDecoder, RegisterMapping};
        use std::sync::Arc;
        let mapping: RegisterMapping = toml::from_str(
            "quantity = \"ua\"\narea = \"holding\"\naddress = 0\ntype = \"u16\"\nscale = 0.1\nrange = [0.0, 300.0]\n",
        )
        .expect("mapping");
        let decoder = RegisterDecoder::new(&mapping, 0);
        let tags = Arc::new(crate::model::Tags::default());
        let measurement: Arc<str> = Arc::from("m");
        let mut readings = Vec::new();
        decoder.readings(&[2301], &tags, &measurement, 0, &mut readings);
        // The same words read with the wrong scale would be 2301 V.
        decoder.readings(&[23010], &tags, &measurement, 0, &mut readings);
        let checks = check_readings(&[mapping], &readings);
        assert!(checks[0].verdict.starts_with("ok"), "{checks:?}");
        assert!(checks[1].verdict.starts_with("OUT OF RANGE"), "{checks:?}");
    }

    #[test]
    fn sixty_four_bit_rows_need_four_words() {
        assert!(!every_order_table(0, &[1, 2, 3]).contains("64-bit"));
        assert!(every_order_table(0, &[1, 2, 3, 4]).contains("64-bit"));
    }
}
