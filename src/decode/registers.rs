//! Modbus register decoding: data types, word/byte order, scale and offset, sensor-open
//! sentinels, bit fields and enumerations; and the `[modbus]` section of a device profile.
//!
//! Orders name the bytes of a 32-bit value as they arrive on the wire, A being the most
//! significant byte of the value (Telegraf's vocabulary):
//!
//! | order | registers (wire) | meaning |
//! |-------|------------------|---------|
//! | ABCD  | `AB CD`          | big-endian words, big-endian bytes (Modbus default) |
//! | CDAB  | `CD AB`          | word-swapped (Midas, many Chinese meters) |
//! | BADC  | `BA DC`          | byte-swapped within each word |
//! | DCBA  | `DC BA`          | fully little-endian |
//!
//! 16- and 64-bit values follow the same two rules (swap bytes within words; reverse words).
//! A value the type cannot hold, a non-finite float, or a sentinel the profile marks as
//! "sensor open" becomes an `Invalid` reading, never a plausible number.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::model::{Quality, Reading, Tags, TimestampNs, Value};

/// `[modbus]` of a device profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusProfile {
    /// Whether `address` values below count from 0 (PDU addresses, the default) or from 1
    /// (the "register 1" of many manuals). 4xxxx notation is not accepted: give the area instead.
    #[serde(default)]
    pub address_base: u16,
    /// Gaps of up to this many unused registers are read anyway to save a request.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// Most registers in one read; the protocol allows 125 (and 2000 bits). Some devices need less.
    #[serde(default = "default_max_registers")]
    pub max_registers_per_request: u16,
    /// For devices that answer only one value per request.
    #[serde(default)]
    pub one_register_per_request: bool,
    /// Pause between two requests to this device, for slow firmware, in milliseconds.
    #[serde(default)]
    pub request_pause_ms: u64,
    /// Poll classes by name, in milliseconds, e.g. `{ fast = 1000, slow = 60000 }`.
    #[serde(default = "default_poll_classes")]
    pub poll_classes: BTreeMap<String, u64>,
    /// The registers (or bits) to read, one quantity each. Those of one area and poll class
    /// are merged into as few reads as `max_gap` and `max_registers_per_request` allow.
    pub registers: Vec<RegisterMapping>,
}

fn default_max_gap() -> u16 {
    10
}
fn default_max_registers() -> u16 {
    125
}
fn default_poll_classes() -> BTreeMap<String, u64> {
    BTreeMap::from([("fast".into(), 1000), ("slow".into(), 60_000)])
}

/// Modbus data areas.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    /// Function 01, read/write bits.
    Coil,
    /// Function 02, read-only bits.
    DiscreteInput,
    /// Function 03, read/write registers.
    Holding,
    /// Function 04, read-only registers.
    Input,
}

impl Area {
    pub fn is_bit(self) -> bool {
        matches!(self, Area::Coil | Area::DiscreteInput)
    }
}

/// How the register(s) of a value are read: its width follows from the type.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// One coil or discrete input.
    Bit,
    /// A register that is 0 (false) or anything else (true).
    Bool,
    /// Unsigned 16-bit integer, one register (0 to 65535).
    U16,
    /// Signed 16-bit integer (two's complement), one register.
    I16,
    /// Unsigned 32-bit integer, two registers.
    U32,
    /// Signed 32-bit integer, two registers.
    I32,
    /// Unsigned 64-bit integer, four registers (energy counters).
    U64,
    /// Signed 64-bit integer, four registers.
    I64,
    /// IEEE 754 single-precision float, two registers.
    F32,
    /// IEEE 754 double-precision float, four registers.
    F64,
    /// ASCII text in `length` registers, two characters each, NULs and trailing spaces trimmed.
    String,
}

impl DataType {
    /// Registers (or bits) one value occupies; strings take their `length`.
    pub fn width(self, length: u16) -> u16 {
        match self {
            DataType::Bit | DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String => length.max(1),
        }
    }
}

/// The order of a multi-register value's bytes on the wire, A being its most significant
/// byte. For a 16-bit value only the byte swap matters (BADC, DCBA); a 64-bit one follows the
/// same rules over four registers. For the 32-bit value 0x11223344, the two registers hold:
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum WordOrder {
    /// `0x1122`, `0x3344`: big-endian words, high word first (the Modbus convention).
    #[default]
    ABCD,
    /// `0x3344`, `0x1122`: low word first, bytes big-endian in each (many Chinese meters).
    CDAB,
    /// `0x2211`, `0x4433`: high word first, the two bytes of each register swapped.
    BADC,
    /// `0x4433`, `0x2211`: fully little-endian, low word first and bytes swapped.
    DCBA,
}

impl WordOrder {
    pub const ALL: [WordOrder; 4] = [
        WordOrder::ABCD,
        WordOrder::CDAB,
        WordOrder::BADC,
        WordOrder::DCBA,
    ];

    fn swaps_bytes(self) -> bool {
        matches!(self, WordOrder::BADC | WordOrder::DCBA)
    }

    fn reverses_words(self) -> bool {
        matches!(self, WordOrder::CDAB | WordOrder::DCBA)
    }
}

/// `[[modbus.registers]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterMapping {
    /// Quantity name; with `bits`, the raw word is kept under this name too.
    pub quantity: String,
    /// Which Modbus area, and so which read function: `holding` (03), `input` (04), `coil`
    /// (01) or `discrete_input` (02). Vendors differ here for the same quantity.
    pub area: Area,
    /// Address of the first register (or bit), counted from `address_base`.
    pub address: u16,
    /// How the value is stored: `bit` for coils and discrete inputs; for registers `bool`,
    /// `u16`, `i16`, `u32`, `i32`, `u64`, `i64`, `f32`, `f64` or `string`.
    #[serde(rename = "type")]
    pub data_type: DataType,
    /// Word and byte order of multi-byte values.
    #[serde(default)]
    pub order: WordOrder,
    /// Registers of a `string`.
    #[serde(default)]
    pub length: u16,
    /// Engineering value = raw × scale + offset.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Added after `scale`, in the engineering unit (e.g. -40 for a sensor that reads
    /// 0 at -40 °C).
    #[serde(default)]
    pub offset: f64,
    /// Engineering unit of the scaled value (`V`, `A`, `mA`, `°C`), for display.
    #[serde(default)]
    pub unit: Option<String>,
    /// Poll class name from `poll_classes`.
    #[serde(default = "default_poll")]
    pub poll: String,
    /// Raw values that mean "sensor open/short/absent" (e.g. 0x7FFF = 32767), read as invalid.
    #[serde(default)]
    pub invalid: Vec<i64>,
    /// Bit number (0 = least significant) -> flag name; each becomes a bool quantity.
    #[serde(default)]
    pub bits: BTreeMap<String, String>,
    /// Raw value -> state name; the quantity becomes text (unknown values read `unknown_<n>`).
    #[serde(default, rename = "enum")]
    pub states: BTreeMap<String, String>,
    /// Groups of adjacent bits that hold one value each (a loop's two state bits); each becomes
    /// its own quantity.
    #[serde(default)]
    pub fields: Vec<BitField>,
    /// Lowest and highest plausible engineering value, for commissioning checks.
    #[serde(default)]
    pub range: Option<(f64, f64)>,
}

/// `fields = [{ quantity = "loop1_state", lsb = 0, width = 2, enum = { 0 = "normal", ... } }]`:
/// `width` bits from bit `lsb` (0 = least significant) read as an unsigned number, the lowest
/// bit least significant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BitField {
    /// Name of the field's quantity, e.g. `loop1_state`.
    pub quantity: String,
    /// Number of the field's lowest bit in the raw value, 0 being the least significant.
    pub lsb: u32,
    /// Bits in the field, at least 1; they must lie within the register(s).
    pub width: u32,
    /// Number -> state name; the quantity becomes text (unknown values read `unknown_<n>`).
    /// Absent: the number itself.
    #[serde(default, rename = "enum")]
    pub states: BTreeMap<String, String>,
}

impl BitField {
    /// The field's number in a raw word.
    pub fn extract(&self, word: u64) -> u64 {
        let mask = if self.width >= 64 {
            u64::MAX
        } else {
            (1u64 << self.width) - 1
        };
        word.checked_shr(self.lsb).unwrap_or(0) & mask
    }
}

fn default_scale() -> f64 {
    1.0
}
fn default_poll() -> String {
    "fast".into()
}

impl ModbusProfile {
    /// Problems serde cannot see, as (key path, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.address_base > 1 {
            problems.push(("address_base".into(), "must be 0 or 1".into()));
        }
        if !(1..=125).contains(&self.max_registers_per_request) {
            problems.push((
                "max_registers_per_request".into(),
                "must be 1 to 125".into(),
            ));
        }
        for (name, ms) in &self.poll_classes {
            if *ms < 100 {
                problems.push((
                    format!("poll_classes.{name}"),
                    "must be at least 100 ms".into(),
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in self.registers.iter().enumerate() {
            let at = |key: &str| format!("registers[{i}].{key}");
            if !names.insert(r.quantity.as_str()) {
                problems.push((
                    at("quantity"),
                    format!("quantity `{}` is mapped twice", r.quantity),
                ));
            }
            if r.address < self.address_base {
                problems.push((
                    at("address"),
                    format!("below address_base {}", self.address_base),
                ));
            }
            if r.area.is_bit() != (r.data_type == DataType::Bit) {
                problems.push((
                    at("type"),
                    "`bit` goes with coil/discrete_input areas, and only there".into(),
                ));
            }
            if r.data_type == DataType::String && r.length == 0 {
                problems.push((
                    at("length"),
                    "a string needs its length in registers".into(),
                ));
            }
            if u32::from(r.data_type.width(r.length)) > u32::from(self.max_registers_per_request) {
                problems.push((at("type"), "wider than max_registers_per_request".into()));
            }
            if !self.poll_classes.contains_key(&r.poll) {
                problems.push((at("poll"), format!("no poll class `{}`", r.poll)));
            }
            if !r.scale.is_finite() || r.scale == 0.0 || !r.offset.is_finite() {
                problems.push((
                    at("scale"),
                    "scale must be finite and non-zero, offset finite".into(),
                ));
            }
            for bit in r.bits.keys() {
                let width_bits = 16 * u32::from(r.data_type.width(r.length));
                if !bit.parse::<u32>().is_ok_and(|b| b < width_bits) {
                    problems.push((
                        at("bits"),
                        format!("bit `{bit}` is not 0 to {}", width_bits - 1),
                    ));
                }
            }
            for raw in r.states.keys() {
                if raw.parse::<i64>().is_err() {
                    problems.push((at("enum"), format!("`{raw}` is not an integer")));
                }
            }
            let width_bits = 16 * u32::from(r.data_type.width(r.length));
            for f in &r.fields {
                if f.width == 0 || f.lsb.saturating_add(f.width) > width_bits.min(64) {
                    problems.push((
                        at("fields"),
                        format!(
                            "`{}`: bits {} to {} are not within the register's 0 to {}",
                            f.quantity,
                            f.lsb,
                            (f.lsb + f.width).saturating_sub(1),
                            width_bits - 1
                        ),
                    ));
                }
                for raw in f.states.keys() {
                    if raw.parse::<u64>().is_err() {
                        problems.push((
                            at("fields"),
                            format!("`{}`: `{raw}` is not a number", f.quantity),
                        ));
                    }
                }
            }
        }
        problems
    }
}

/// A decoded raw value before scaling.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    Int(i128),
    Float(f64),
    Text(String),
}

/// Arranges the words of one value into big-endian byte order per `order`.
fn big_endian_bytes(words: &[u16], order: WordOrder) -> Vec<u8> {
    let mut ordered: Vec<u16> = words.to_vec();
    if order.reverses_words() {
        ordered.reverse();
    }
    let mut bytes = Vec::with_capacity(ordered.len() * 2);
    for w in ordered {
        let [hi, lo] = w.to_be_bytes();
        if order.swaps_bytes() {
            bytes.extend([lo, hi]);
        } else {
            bytes.extend([hi, lo]);
        }
    }
    bytes
}

/// Decodes the words of one value. `words` must hold exactly the type's width.
pub fn decode_raw(words: &[u16], data_type: DataType, order: WordOrder) -> Option<Raw> {
    let b = big_endian_bytes(words, order);
    let raw = match data_type {
        DataType::Bit | DataType::Bool | DataType::U16 => {
            Raw::Int(i128::from(u16::from_be_bytes(b.get(..2)?.try_into().ok()?)))
        }
        DataType::I16 => Raw::Int(i128::from(i16::from_be_bytes(b.get(..2)?.try_into().ok()?))),
        DataType::U32 => Raw::Int(i128::from(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))),
        DataType::I32 => Raw::Int(i128::from(i32::from_be_bytes(b.get(..4)?.try_into().ok()?))),
        DataType::U64 => Raw::Int(i128::from(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))),
        DataType::I64 => Raw::Int(i128::from(i64::from_be_bytes(b.get(..8)?.try_into().ok()?))),
        DataType::F32 => Raw::Float(widen_f32(f32::from_be_bytes(b.get(..4)?.try_into().ok()?))),
        DataType::F64 => Raw::Float(f64::from_be_bytes(b.get(..8)?.try_into().ok()?)),
        DataType::String => {
            let text: String = b
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| char::from(c))
                .collect();
            Raw::Text(text.trim_end().to_string())
        }
    };
    Some(raw)
}

/// A register mapping prepared for the hot path.
pub struct RegisterDecoder {
    mapping: RegisterMapping,
    /// PDU address (0-based) of the first word.
    pub pdu_address: u16,
    quantity: Arc<str>,
    unit: Option<Arc<str>>,
    bit_names: Vec<(u32, Arc<str>)>,
    states: BTreeMap<i64, Arc<str>>,
    fields: Vec<FieldDecoder>,
}

/// A bit field with its quantity and state names ready to share.
#[derive(Debug, Clone)]
struct FieldDecoder {
    field: BitField,
    quantity: Arc<str>,
    states: BTreeMap<u64, Arc<str>>,
}

impl RegisterDecoder {
    pub fn new(mapping: &RegisterMapping, address_base: u16) -> Self {
        RegisterDecoder {
            pdu_address: mapping.address.saturating_sub(address_base),
            quantity: Arc::from(mapping.quantity.as_str()),
            unit: mapping.unit.as_deref().map(Arc::from),
            bit_names: mapping
                .bits
                .iter()
                .filter_map(|(bit, name)| Some((bit.parse().ok()?, Arc::from(name.as_str()))))
                .collect(),
            states: mapping
                .states
                .iter()
                .filter_map(|(raw, name)| Some((raw.parse().ok()?, Arc::from(name.as_str()))))
                .collect(),
            fields: mapping
                .fields
                .iter()
                .map(|f| {
                    let states = f
                        .states
                        .iter()
                        .filter_map(|(raw, name)| {
                            Some((raw.parse().ok()?, Arc::from(name.as_str())))
                        })
                        .collect();
                    FieldDecoder {
                        field: f.clone(),
                        quantity: Arc::from(f.quantity.as_str()),
                        states,
                    }
                })
                .collect(),
            mapping: mapping.clone(),
        }
    }

    pub fn area(&self) -> Area {
        self.mapping.area
    }

    pub fn width(&self) -> u16 {
        self.mapping.data_type.width(self.mapping.length)
    }

    pub fn quantity(&self) -> &str {
        &self.quantity
    }

    pub fn poll_class(&self) -> &str {
        &self.mapping.poll
    }

    /// Turns the words of this register into readings (one, plus one per named bit and field).
    pub fn readings(
        &self,
        words: &[u16],
        tags: &Arc<Tags>,
        measurement: &Arc<str>,
        timestamp_ns: TimestampNs,
        out: &mut Vec<Reading>,
    ) {
        let reading =
            |quantity: Arc<str>, value: Value, unit: Option<Arc<str>>, quality: Quality| Reading {
                tags: Arc::clone(tags),
                measurement: Arc::clone(measurement),
                quantity,
                value,
                unit,
                timestamp_ns,
                quality,
            };
        let raw = if words.len() == usize::from(self.width()) {
            decode_raw(words, self.mapping.data_type, self.mapping.order)
        } else {
            None
        };
        let (value, quality) = match &raw {
            None => (Value::Int(0), Quality::Invalid),
            Some(raw) => self.engineering(raw),
        };
        out.push(reading(
            Arc::clone(&self.quantity),
            value,
            self.unit.clone(),
            quality,
        ));
        if let (Some(Raw::Int(bits)), false) = (&raw, self.bit_names.is_empty()) {
            for (bit, name) in &self.bit_names {
                let set = (bits >> bit) & 1 == 1;
                out.push(reading(
                    Arc::clone(name),
                    Value::Bool(set),
                    None,
                    Quality::Good,
                ));
            }
        }
        if let (Some(Raw::Int(word)), false) = (&raw, self.fields.is_empty()) {
            for FieldDecoder {
                field,
                quantity: name,
                states,
            } in &self.fields
            {
                let n = field.extract(*word as u64);
                let value = match states.get(&n) {
                    Some(state) => Value::Text(Arc::clone(state)),
                    None if !states.is_empty() => Value::Text(Arc::from(format!("unknown_{n}"))),
                    None => Value::Int(n as i64),
                };
                out.push(reading(Arc::clone(name), value, None, Quality::Good));
            }
        }
    }

    fn engineering(&self, raw: &Raw) -> (Value, Quality) {
        let m = &self.mapping;
        match raw {
            Raw::Text(text) => (Value::Text(Arc::from(text.as_str())), Quality::Good),
            Raw::Int(i) => {
                if i64::try_from(*i).is_ok_and(|v| m.invalid.contains(&v)) {
                    return (Value::Int(0), Quality::Invalid);
                }
                if !self.states.is_empty() {
                    let name = i64::try_from(*i)
                        .ok()
                        .and_then(|v| self.states.get(&v).cloned())
                        .unwrap_or_else(|| Arc::from(format!("unknown_{i}").as_str()));
                    return (Value::Text(name), Quality::Good);
                }
                match m.data_type {
                    DataType::Bit | DataType::Bool => (Value::Bool(*i != 0), Quality::Good),
                    _ if m.scale == 1.0 && m.offset == 0.0 => match i64::try_from(*i) {
                        Ok(v) => (Value::Int(v), Quality::Good),
                        // A u64 beyond i64 cannot be stored as an integer field.
                        Err(_) => (Value::Int(0), Quality::Invalid),
                    },
                    _ => scaled(*i as f64, m.scale, m.offset),
                }
            }
            Raw::Float(f) if !f.is_finite() => (Value::Float(0.0), Quality::Invalid),
            Raw::Float(f) => {
                if m.invalid.iter().any(|s| *s as f64 == *f) {
                    return (Value::Float(0.0), Quality::Invalid);
                }
                scaled(*f, m.scale, m.offset)
            }
        }
    }
}

fn scaled(raw: f64, scale: f64, offset: f64) -> (Value, Quality) {
    if scale == 1.0 && offset == 0.0 {
        return (Value::Float(raw), Quality::Good);
    }
    let v = raw * scale + offset;
    if v.is_finite() {
        (Value::Float(round_significant(v)), Quality::Good)
    } else {
        (Value::Float(0.0), Quality::Invalid)
    }
}

/// f32 -> f64 through the f32's shortest decimal form, so that a meter's 230.1f32 reads 230.1
/// and not 230.09999084472656: the device meant the decimal, not the binary fraction.
fn widen_f32(value: f32) -> f64 {
    if !value.is_finite() {
        return f64::from(value);
    }
    ryu::Buffer::new()
        .format_finite(value)
        .parse()
        .unwrap_or(f64::from(value))
}

/// Scaling adds binary noise in the 16th-17th significant digit (2301 x 0.1 =
/// 230.10000000000002). Twelve significant digits remove it and keep everything a Modbus
/// value (at most about 10 digits) can carry.
fn round_significant(value: f64) -> f64 {
    format!("{value:.11e}").parse().unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(data_type: DataType, order: WordOrder) -> RegisterMapping {
        RegisterMapping {
            quantity: "q".into(),
            area: Area::Holding,
            address: 0,
            data_type,
            order,
            length: 0,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            poll: "fast".into(),
            invalid: vec![],
            bits: BTreeMap::new(),
            fields: Vec::new(),
            states: BTreeMap::new(),
            range: None,
        }
    }

    fn decode(m: &RegisterMapping, words: &[u16]) -> Vec<Reading> {
        let mut out = Vec::new();
        RegisterDecoder::new(m, 0).readings(
            words,
            &Arc::new(Tags::default()),
            &Arc::from("m"),
            0,
            &mut out,
        );
        out
    }

    #[test]
    fn f32_in_all_four_orders_reads_the_same_value() {
        // 230.1f32 = 0x4366199A: A=0x43 B=0x66 C=0x19 D=0x9A.
        let cases = [
            (WordOrder::ABCD, [0x4366, 0x199A]),
            (WordOrder::CDAB, [0x199A, 0x4366]),
            (WordOrder::BADC, [0x6643, 0x9A19]),
            (WordOrder::DCBA, [0x9A19, 0x6643]),
        ];
        for (order, words) in cases {
            let r = decode(&mapping(DataType::F32, order), &words);
            assert_eq!(r[0].value, Value::Float(230.1), "{order:?}");
        }
    }

    #[test]
    fn i32_word_swapped_negative() {
        // -2 = 0xFFFFFFFE; CDAB puts the low word first.
        let r = decode(&mapping(DataType::I32, WordOrder::CDAB), &[0xFFFE, 0xFFFF]);
        assert_eq!(r[0].value, Value::Int(-2));
    }

    #[test]
    fn u64_and_f64_follow_the_same_rules() {
        let r = decode(&mapping(DataType::U64, WordOrder::ABCD), &[0, 0, 1, 2]);
        assert_eq!(r[0].value, Value::Int(0x0001_0002));
        let r = decode(
            &mapping(DataType::U64, WordOrder::DCBA),
            &[0x0200, 0x0100, 0, 0],
        );
        assert_eq!(r[0].value, Value::Int(0x0001_0002));
        let words = 1.5f64.to_bits().to_be_bytes();
        let w: Vec<u16> = words
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        let r = decode(&mapping(DataType::F64, WordOrder::ABCD), &w);
        assert_eq!(r[0].value, Value::Float(1.5));
    }

    #[test]
    fn u64_beyond_i64_is_invalid_not_wrapped() {
        let r = decode(&mapping(DataType::U64, WordOrder::ABCD), &[0xFFFF; 4]);
        assert_eq!(r[0].quality, Quality::Invalid);
    }

    #[test]
    fn scale_and_offset_give_engineering_values_without_float_noise() {
        let mut m = mapping(DataType::U16, WordOrder::ABCD);
        m.scale = 0.1;
        assert_eq!(decode(&m, &[2301])[0].value, Value::Float(230.1));
        m.scale = 0.01;
        m.offset = -40.0;
        assert_eq!(decode(&m, &[6525])[0].value, Value::Float(25.25));
    }

    #[test]
    fn sensor_open_sentinel_is_invalid_never_a_temperature() {
        let mut m = mapping(DataType::I16, WordOrder::ABCD);
        m.scale = 0.1;
        m.invalid = vec![0x7FFF];
        let r = decode(&m, &[0x7FFF]);
        assert_eq!(r[0].quality, Quality::Invalid);
        assert_eq!(decode(&m, &[0xFF9C])[0].value, Value::Float(-10.0));
    }

    #[test]
    fn nan_float_is_invalid() {
        let r = decode(&mapping(DataType::F32, WordOrder::ABCD), &[0x7FC0, 0x0000]);
        assert_eq!(r[0].quality, Quality::Invalid);
    }

    #[test]
    fn wrong_word_count_is_invalid() {
        let r = decode(&mapping(DataType::U32, WordOrder::ABCD), &[1]);
        assert_eq!(r[0].quality, Quality::Invalid);
    }

    #[test]
    fn bit_fields_become_named_flags_next_to_the_raw_word() {
        let mut m = mapping(DataType::U16, WordOrder::ABCD);
        m.bits = BTreeMap::from([
            ("0".into(), "leak_alarm".into()),
            ("8".into(), "ct_open".into()),
        ]);
        let r = decode(&m, &[0x0100]);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].value, Value::Int(256));
        assert_eq!(
            (r[1].quantity.as_ref(), &r[1].value),
            ("leak_alarm", &Value::Bool(false))
        );
        assert_eq!(
            (r[2].quantity.as_ref(), &r[2].value),
            ("ct_open", &Value::Bool(true))
        );
    }

    #[test]
    fn multi_bit_fields_read_as_numbers_or_named_states() {
        let mut m = mapping(DataType::U16, WordOrder::ABCD);
        let states = BTreeMap::from([
            ("0".into(), "normal".into()),
            ("1".into(), "short".into()),
            ("2".into(), "open".into()),
            ("3".into(), "overload".into()),
        ]);
        m.fields = vec![
            BitField {
                quantity: "loop1_state".into(),
                lsb: 0,
                width: 2,
                states: states.clone(),
            },
            BitField {
                quantity: "loop2_state".into(),
                lsb: 2,
                width: 2,
                states,
            },
            BitField {
                quantity: "counter".into(),
                lsb: 12,
                width: 4,
                states: BTreeMap::new(),
            },
        ];
        // Loop 1 = 0b10 (open), loop 2 = 0b11 (overload), bits 12-15 = 9.
        let r = decode(&m, &[0x900E]);
        let got: Vec<(&str, &Value)> = r.iter().map(|r| (r.quantity.as_ref(), &r.value)).collect();
        assert_eq!(
            got[1..],
            [
                ("loop1_state", &Value::Text("open".into())),
                ("loop2_state", &Value::Text("overload".into())),
                ("counter", &Value::Int(9)),
            ]
        );
    }

    #[test]
    fn enumerations_name_states_and_unknown_values_say_so() {
        let mut m = mapping(DataType::U16, WordOrder::ABCD);
        m.states = BTreeMap::from([("0".into(), "normal".into()), ("3".into(), "fault".into())]);
        assert_eq!(decode(&m, &[3])[0].value, Value::Text("fault".into()));
        assert_eq!(decode(&m, &[9])[0].value, Value::Text("unknown_9".into()));
    }

    #[test]
    fn strings_trim_nuls_and_spaces() {
        let mut m = mapping(DataType::String, WordOrder::ABCD);
        m.length = 3;
        let r = decode(&m, &[0x4348, 0x3420, 0x0000]);
        assert_eq!(r[0].value, Value::Text("CH4".into()));
    }

    #[test]
    fn one_based_addresses_become_pdu_addresses() {
        let mut m = mapping(DataType::U16, WordOrder::ABCD);
        m.address = 1;
        assert_eq!(RegisterDecoder::new(&m, 1).pdu_address, 0);
    }
}
