//! The device's own bytes inside a JSON payload: a Base64 or hex string (CTWing's transparent
//! `APPdata`, a DTU's hex dump) read as fixed fields at byte offsets, each an integer or a
//! float in either byte order, scaled or named by an enum.
//!
//! Owns: the `[payload.bytes]` mapping, the text-to-bytes decoding and reading one field.
//! Must not touch: IO, the clock, counters (the payload decoder reports the problems).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use serde::Deserialize;

use crate::decode::payload::{DecodeError, DecodeErrorKind};
use crate::model::Value;

/// `[payload.bytes]`: where the device's bytes are in the payload, how they are written, and
/// the fields to read from them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BytesMapping {
    /// JSON pointer to the string holding the bytes, e.g. `/APPdata`. A payload without it
    /// (an online report) gives no readings from bytes and no error.
    pub pointer: String,
    /// How the string writes the bytes: `base64` or `hex`.
    pub encoding: BytesEncoding,
    /// `[[payload.bytes.fields]]`: one entry per quantity.
    pub fields: Vec<ByteField>,
}

/// How a JSON string writes bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BytesEncoding {
    /// Standard Base64 with padding (RFC 4648), as CTWing's `APPdata`, e.g. `AQKg/w==`.
    Base64,
    /// Two hex digits a byte, either case, e.g. `0102A0FF`; spaces between bytes allowed.
    Hex,
}

/// The type of a field in the device's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ByteType {
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer (two's complement).
    I8,
    /// Unsigned 16-bit integer.
    U16,
    /// Signed 16-bit integer (two's complement).
    I16,
    /// Unsigned 32-bit integer.
    U32,
    /// Signed 32-bit integer (two's complement).
    I32,
    /// IEEE 754 single-precision float.
    F32,
}

impl ByteType {
    fn len(self) -> usize {
        match self {
            ByteType::U8 | ByteType::I8 => 1,
            ByteType::U16 | ByteType::I16 => 2,
            ByteType::U32 | ByteType::I32 | ByteType::F32 => 4,
        }
    }
}

/// The order of a multi-byte field's bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endian {
    /// Most significant byte first (network order), what most NB-IoT firmware sends.
    #[default]
    Big,
    /// Least significant byte first.
    Little,
}

/// `[[payload.bytes.fields]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByteField {
    /// Quantity name, written as the InfluxDB field key.
    pub quantity: String,
    /// Offset of the field's first byte, from 0.
    pub offset: usize,
    /// `u8`, `i8`, `u16`, `i16`, `u32`, `i32` or `f32`.
    #[serde(rename = "type")]
    pub kind: ByteType,
    /// `big` (default) or `little`.
    #[serde(default)]
    pub endian: Endian,
    /// Engineering value = raw x `scale`; with it an integer field becomes a float quantity.
    #[serde(default)]
    pub scale: Option<f64>,
    /// Engineering unit, for display.
    #[serde(default)]
    pub unit: Option<String>,
    /// Raw integer -> state name; the quantity becomes text (unknown values read
    /// `unknown_<n>`), e.g. `{ 0 = "normal", 1 = "alarm" }`.
    #[serde(default, rename = "enum")]
    pub states: BTreeMap<String, String>,
}

impl BytesMapping {
    /// Problems serde cannot see, as (key path below `bytes`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if !self.pointer.starts_with('/') {
            problems.push(("pointer".into(), "a JSON pointer starts with `/`".into()));
        }
        for (i, f) in self.fields.iter().enumerate() {
            if f.quantity.is_empty() {
                problems.push((format!("fields[{i}].quantity"), "must not be empty".into()));
            }
            if f.scale.is_some_and(|s| !s.is_finite() || s == 0.0) {
                problems.push((
                    format!("fields[{i}].scale"),
                    "must be a finite number other than 0".into(),
                ));
            }
            if !f.states.is_empty() && f.kind == ByteType::F32 {
                problems.push((
                    format!("fields[{i}].enum"),
                    "names integer values; an f32 field has none".into(),
                ));
            }
            if let Some(key) = f.states.keys().find(|k| k.parse::<i64>().is_err()) {
                problems.push((
                    format!("fields[{i}].enum"),
                    format!("`{key}` is not an integer"),
                ));
            }
        }
        problems
    }
}

/// A byte field prepared for decoding.
pub struct CompiledByteField {
    pub quantity: Arc<str>,
    pub unit: Option<Arc<str>>,
    offset: usize,
    kind: ByteType,
    endian: Endian,
    scale: Option<f64>,
    states: BTreeMap<i64, Arc<str>>,
}

impl CompiledByteField {
    pub fn new(field: &ByteField) -> Result<Self, String> {
        let mut states = BTreeMap::new();
        for (raw, name) in &field.states {
            let raw: i64 = raw
                .parse()
                .map_err(|_| format!("enum key `{raw}` is not an integer"))?;
            states.insert(raw, Arc::from(name.as_str()));
        }
        Ok(CompiledByteField {
            quantity: Arc::from(field.quantity.as_str()),
            unit: field.unit.as_deref().map(Arc::from),
            offset: field.offset,
            kind: field.kind,
            endian: field.endian,
            scale: field.scale,
            states,
        })
    }

    /// The field's value in `bytes`; a `MissingField` problem when they are too short.
    pub fn read(&self, bytes: &[u8]) -> Result<Value, DecodeError> {
        let len = self.kind.len();
        let Some(raw) = self
            .offset
            .checked_add(len)
            .and_then(|end| bytes.get(self.offset..end))
        else {
            return Err(DecodeError::new(
                DecodeErrorKind::MissingField,
                format!(
                    "{} needs bytes {}..{} but the device sent {}",
                    self.quantity,
                    self.offset,
                    self.offset.saturating_add(len),
                    bytes.len()
                ),
            ));
        };
        let mut word = [0u8; 4];
        word[..len].copy_from_slice(raw);
        if self.endian == Endian::Little {
            word[..len].reverse();
        }
        // Big-endian from here on, in the first `len` bytes.
        let integer = match self.kind {
            ByteType::U8 => i64::from(word[0]),
            ByteType::I8 => i64::from(word[0] as i8),
            ByteType::U16 => i64::from(u16::from_be_bytes([word[0], word[1]])),
            ByteType::I16 => i64::from(i16::from_be_bytes([word[0], word[1]])),
            ByteType::U32 => i64::from(u32::from_be_bytes(word)),
            ByteType::I32 => i64::from(i32::from_be_bytes(word)),
            ByteType::F32 => {
                let float = f64::from(f32::from_be_bytes(word));
                if !float.is_finite() {
                    return Err(DecodeError::new(
                        DecodeErrorKind::OutOfRange,
                        format!("{} is not a finite number", self.quantity),
                    ));
                }
                return Ok(Value::Float(float * self.scale.unwrap_or(1.0)));
            }
        };
        if !self.states.is_empty() {
            let name = self
                .states
                .get(&integer)
                .cloned()
                .unwrap_or_else(|| Arc::from(format!("unknown_{integer}").as_str()));
            return Ok(Value::Text(name));
        }
        Ok(match self.scale {
            Some(scale) => Value::Float(integer as f64 * scale),
            None => Value::Int(integer),
        })
    }
}

/// The bytes a string writes in `encoding`; a `WrongType` problem when it is not that.
pub fn decode_text(encoding: BytesEncoding, text: &str) -> Result<Vec<u8>, DecodeError> {
    let bad = |what: &str| {
        DecodeError::new(
            DecodeErrorKind::WrongType,
            format!("the device's bytes are not {what}"),
        )
    };
    match encoding {
        BytesEncoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| bad("Base64")),
        BytesEncoding::Hex => {
            let digits: Vec<u8> = text.bytes().filter(|b| *b != b' ').collect();
            if digits.len() % 2 != 0 {
                return Err(bad("hex (an odd number of digits)"));
            }
            digits
                .chunks(2)
                .map(|pair| {
                    let hex = |d: u8| (d as char).to_digit(16);
                    match (hex(pair[0]), hex(pair[1])) {
                        (Some(high), Some(low)) => Ok((high * 16 + low) as u8),
                        _ => Err(bad("hex")),
                    }
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(text: &str) -> CompiledByteField {
        let field: ByteField = toml::from_str(text).expect("field");
        CompiledByteField::new(&field).expect("compiled")
    }

    #[test]
    fn base64_and_hex_give_the_same_bytes() {
        let bytes = [0x01, 0x02, 0xA0, 0xFF];
        assert_eq!(
            decode_text(BytesEncoding::Base64, "AQKg/w==").expect("b64"),
            bytes
        );
        assert_eq!(
            decode_text(BytesEncoding::Hex, "0102A0ff").expect("hex"),
            bytes
        );
        assert_eq!(
            decode_text(BytesEncoding::Hex, "01 02 a0 FF").expect("spaced"),
            bytes
        );
        for (encoding, bad) in [
            (BytesEncoding::Base64, "AQKg/w="),
            (BytesEncoding::Base64, "not base64!"),
            (BytesEncoding::Hex, "0102A"),
            (BytesEncoding::Hex, "01GG"),
        ] {
            let err = decode_text(encoding, bad).expect_err(bad);
            assert_eq!(err.kind, DecodeErrorKind::WrongType, "{bad}");
        }
    }

    #[test]
    fn integers_in_both_byte_orders_signed_and_unsigned() {
        let bytes = [0xFF, 0x38, 0x01, 0x00, 0x00, 0x00];
        let read = |text: &str| field(text).read(&bytes).expect(text);
        assert_eq!(
            read("quantity = 'a'\noffset = 0\ntype = 'u8'"),
            Value::Int(255)
        );
        assert_eq!(
            read("quantity = 'a'\noffset = 0\ntype = 'i8'"),
            Value::Int(-1)
        );
        assert_eq!(
            read("quantity = 'a'\noffset = 0\ntype = 'u16'"),
            Value::Int(0xFF38)
        );
        assert_eq!(
            read("quantity = 'a'\noffset = 0\ntype = 'i16'"),
            Value::Int(-200)
        );
        assert_eq!(
            read("quantity = 'a'\noffset = 2\ntype = 'u16'\nendian = 'little'"),
            Value::Int(1)
        );
        assert_eq!(
            read("quantity = 'a'\noffset = 2\ntype = 'u32'"),
            Value::Int(0x0100_0000)
        );
        assert_eq!(
            read("quantity = 'a'\noffset = 2\ntype = 'i32'\nendian = 'little'"),
            Value::Int(1)
        );
        assert_eq!(
            read("quantity = 'a'\noffset = 0\ntype = 'i16'\nscale = 0.1"),
            Value::Float(-200.0 * 0.1)
        );
    }

    #[test]
    fn floats_enums_and_short_payloads() {
        let mut bytes = 21.5f32.to_be_bytes().to_vec();
        bytes.extend(21.5f32.to_le_bytes());
        bytes.push(2);
        let read = |text: &str| field(text).read(&bytes);
        assert_eq!(
            read("quantity = 't'\noffset = 0\ntype = 'f32'"),
            Ok(Value::Float(21.5))
        );
        assert_eq!(
            read("quantity = 't'\noffset = 4\ntype = 'f32'\nendian = 'little'"),
            Ok(Value::Float(21.5))
        );
        let states =
            "quantity = 'event'\noffset = 8\ntype = 'u8'\nenum = { 0 = 'normal', 1 = 'alarm' }";
        assert_eq!(read(states), Ok(Value::Text(Arc::from("unknown_2"))));
        bytes[8] = 1;
        assert_eq!(
            field(states).read(&bytes),
            Ok(Value::Text(Arc::from("alarm")))
        );
        let short = field("quantity = 'x'\noffset = 8\ntype = 'u16'").read(&bytes);
        assert_eq!(
            short.map_err(|e| e.kind),
            Err(DecodeErrorKind::MissingField)
        );
        let far = field("quantity = 'x'\noffset = 9223372036854775807\ntype = 'u16'").read(&bytes);
        assert!(far.is_err(), "an offset near usize::MAX does not overflow");
        let nan = field("quantity = 'x'\noffset = 0\ntype = 'f32'").read(&f32::NAN.to_be_bytes());
        assert_eq!(nan.map_err(|e| e.kind), Err(DecodeErrorKind::OutOfRange));
    }

    #[test]
    fn mapping_problems_are_found() {
        let mapping: BytesMapping = toml::from_str(
            r#"
            pointer = "APPdata"
            encoding = "base64"
            [[fields]]
            quantity = ""
            offset = 0
            type = "f32"
            scale = 0.0
            enum = { x = "a" }
            "#,
        )
        .expect("mapping");
        let keys: Vec<String> = mapping.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "pointer",
                "fields[0].quantity",
                "fields[0].scale",
                "fields[0].enum",
                "fields[0].enum"
            ]
        );
    }
}
