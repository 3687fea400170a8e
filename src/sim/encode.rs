//! What a simulated device sends, from engineering values (pure): Modbus register words through
//! a profile's register map (the inverse of `decode::registers`), and JSON payloads through a
//! profile's payload map (the inverse of `decode::payload`). Any shipped or site profile can so
//! be simulated without code of its own.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value as Json;

use crate::decode::payload::{FieldType, PayloadMapping, TimeUnit};
use crate::decode::registers::{DataType, RegisterMapping, WordOrder};

/// A value a scenario gives a quantity or a flag.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SimValue {
    Bool(bool),
    Number(f64),
    Text(String),
}

impl SimValue {
    fn number(&self) -> Option<f64> {
        match self {
            SimValue::Number(n) => Some(*n),
            SimValue::Bool(b) => Some(f64::from(u8::from(*b))),
            SimValue::Text(_) => None,
        }
    }
}

/// Big-endian bytes of one raw value laid out as words in `order`.
fn words_from_be_bytes(bytes: &[u8], order: WordOrder) -> Vec<u16> {
    let mut words: Vec<u16> = bytes
        .chunks(2)
        .map(|pair| {
            let (hi, lo) = (pair[0], pair.get(1).copied().unwrap_or(0));
            if matches!(order, WordOrder::BADC | WordOrder::DCBA) {
                u16::from_be_bytes([lo, hi])
            } else {
                u16::from_be_bytes([hi, lo])
            }
        })
        .collect();
    if matches!(order, WordOrder::CDAB | WordOrder::DCBA) {
        words.reverse();
    }
    words
}

/// The words of one mapped register holding `value` (engineering units), or `None` when the
/// value does not fit the mapping (text for a number, an unknown state name).
pub fn register_words(mapping: &RegisterMapping, value: &SimValue) -> Option<Vec<u16>> {
    let raw: f64 = match value {
        SimValue::Text(name) if !mapping.states.is_empty() => mapping
            .states
            .iter()
            .find(|(_, state)| *state == name)
            .and_then(|(raw, _)| raw.parse::<f64>().ok())?,
        SimValue::Text(text) if mapping.data_type == DataType::String => {
            let mut bytes: Vec<u8> = text.bytes().collect();
            bytes.resize(usize::from(mapping.length.max(1)) * 2, 0);
            return Some(words_from_be_bytes(&bytes, mapping.order));
        }
        other => {
            let v = other.number()?;
            if mapping.scale == 0.0 {
                return None;
            }
            (v - mapping.offset) / mapping.scale
        }
    };
    let rounded = raw.round();
    let bytes: Vec<u8> = match mapping.data_type {
        DataType::Bit | DataType::Bool | DataType::U16 => (rounded.clamp(0.0, f64::from(u16::MAX))
            as u16)
            .to_be_bytes()
            .to_vec(),
        DataType::I16 => (rounded.clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16)
            .to_be_bytes()
            .to_vec(),
        DataType::U32 => (rounded.clamp(0.0, f64::from(u32::MAX)) as u32)
            .to_be_bytes()
            .to_vec(),
        DataType::I32 => (rounded.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32)
            .to_be_bytes()
            .to_vec(),
        DataType::U64 => (rounded.max(0.0) as u64).to_be_bytes().to_vec(),
        DataType::I64 => (rounded as i64).to_be_bytes().to_vec(),
        DataType::F32 => (raw as f32).to_be_bytes().to_vec(),
        DataType::F64 => raw.to_be_bytes().to_vec(),
        DataType::String => return None,
    };
    Some(words_from_be_bytes(&bytes, mapping.order))
}

/// The status word of a mapping with named bits and bit fields, from the flags that are set
/// and the fields' values (a state name of the field's `enum`, or a number).
pub fn status_word(mapping: &RegisterMapping, values: &BTreeMap<String, SimValue>) -> u16 {
    let flags = mapping
        .bits
        .iter()
        .filter(|(_, name)| matches!(values.get(*name), Some(SimValue::Bool(true))))
        .filter_map(|(bit, _)| bit.parse::<u32>().ok())
        .filter(|bit| *bit < 16)
        .fold(0u16, |word, bit| word | (1 << bit));
    mapping.fields.iter().fold(flags, |word, field| {
        let n = match values.get(&field.quantity) {
            Some(SimValue::Text(state)) => field
                .states
                .iter()
                .find(|(_, name)| *name == state)
                .and_then(|(raw, _)| raw.parse::<u16>().ok()),
            Some(SimValue::Number(n)) => Some(*n as u16),
            _ => None,
        };
        match n {
            Some(n) if field.lsb + field.width <= 16 => {
                let mask = ((1u32 << field.width) - 1) as u16;
                (word & !(mask << field.lsb)) | ((n & mask) << field.lsb)
            }
            _ => word,
        }
    })
}

/// Sets `value` at an RFC 6901 pointer, creating objects and arrays on the way.
fn set_pointer(root: &mut Json, pointer: &str, value: Json) {
    let mut node = root;
    let tokens: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, token) in tokens.iter().enumerate() {
        let last = i + 1 == tokens.len();
        let next_is_index = tokens
            .get(i + 1)
            .is_some_and(|t| t.parse::<usize>().is_ok());
        let fresh = || {
            if next_is_index {
                Json::Array(Vec::new())
            } else {
                Json::Object(serde_json::Map::new())
            }
        };
        node = match node {
            Json::Array(items) => {
                let Ok(index) = token.parse::<usize>() else {
                    return;
                };
                if items.len() <= index {
                    items.resize(index + 1, Json::Null);
                }
                if last {
                    items[index] = value;
                    return;
                }
                if items[index].is_null() {
                    items[index] = fresh();
                }
                &mut items[index]
            }
            Json::Object(map) => {
                if last {
                    map.insert(token.clone(), value);
                    return;
                }
                map.entry(token.clone()).or_insert_with(fresh)
            }
            _ => return,
        };
    }
}

/// The JSON a device with this payload map sends for `values`, stamped with `now_ms` and
/// naming `device` where the map reads the device id from the payload.
pub fn json_payload(
    mapping: &PayloadMapping,
    values: &BTreeMap<String, SimValue>,
    device: &str,
    now_ms: i64,
) -> Json {
    let mut root = Json::Object(serde_json::Map::new());
    if let Some(pointer) = &mapping.device {
        set_pointer(&mut root, pointer, Json::String(device.to_string()));
    }
    if let Some(ts) = &mapping.timestamp {
        let stamp = match ts.unit {
            TimeUnit::S => now_ms / 1000,
            TimeUnit::Ms => now_ms,
            TimeUnit::Us => now_ms * 1000,
            TimeUnit::Ns => now_ms * 1_000_000,
        };
        set_pointer(&mut root, &ts.pointer, Json::from(stamp));
    }
    for field in &mapping.fields {
        let Some(value) = values.get(&field.quantity) else {
            continue;
        };
        let json = match (field.kind, value) {
            (FieldType::Text, SimValue::Text(t)) => Json::String(t.clone()),
            (FieldType::Bool, v) => Json::Bool(v.number().is_some_and(|n| n != 0.0)),
            (FieldType::Int, v) => match v.number() {
                Some(n) => Json::from(n.round() as i64),
                None => continue,
            },
            (_, v) => match v.number().and_then(serde_json::Number::from_f64) {
                Some(n) => Json::Number(n),
                None => continue,
            },
        };
        set_pointer(&mut root, &field.pointer, json);
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::registers::{decode_raw, Raw};

    fn mapping(text: &str) -> RegisterMapping {
        toml::from_str(text).expect("mapping")
    }

    #[test]
    fn encoded_words_decode_back_in_every_order() {
        for order in ["ABCD", "CDAB", "BADC", "DCBA"] {
            let m = mapping(&format!(
                "quantity = \"q\"\narea = \"holding\"\naddress = 0\ntype = \"f32\"\norder = \"{order}\"\n"
            ));
            let words = register_words(&m, &SimValue::Number(230.5)).expect("words");
            assert_eq!(
                decode_raw(&words, DataType::F32, m.order),
                Some(Raw::Float(230.5)),
                "{order}"
            );
            let m = mapping(&format!(
                "quantity = \"q\"\narea = \"holding\"\naddress = 0\ntype = \"i32\"\norder = \"{order}\"\nscale = 0.01\n"
            ));
            let words = register_words(&m, &SimValue::Number(-12.34)).expect("words");
            assert_eq!(
                decode_raw(&words, DataType::I32, m.order),
                Some(Raw::Int(-1234))
            );
        }
    }

    #[test]
    fn state_names_and_flags_become_raw_values() {
        let m = mapping(
            "quantity = \"status\"\narea = \"holding\"\naddress = 3\ntype = \"u16\"\nenum = { 0 = \"normal\", 2 = \"high_alarm\" }\n",
        );
        assert_eq!(
            register_words(&m, &SimValue::Text("high_alarm".into())),
            Some(vec![2])
        );
        assert_eq!(register_words(&m, &SimValue::Text("nonsense".into())), None);
        let m = mapping(
            "quantity = \"status\"\narea = \"holding\"\naddress = 8\ntype = \"u16\"\nbits = { 0 = \"leak_alarm\", 8 = \"ct_open\" }\n",
        );
        let flags = BTreeMap::from([
            ("ct_open".to_string(), SimValue::Bool(true)),
            ("leak_alarm".into(), SimValue::Bool(false)),
        ]);
        assert_eq!(status_word(&m, &flags), 1 << 8);
        // AIM-R100 loop states: two bits per loop, `open` is 0b10.
        let m = mapping(
            "quantity = \"loops\"\narea = \"holding\"\naddress = 11\ntype = \"u16\"\n\
             fields = [{ quantity = \"loop1_state\", lsb = 0, width = 2, enum = { 0 = \"normal\", 1 = \"short\", 2 = \"open\", 3 = \"overload\" } }, \
                       { quantity = \"loop2_state\", lsb = 2, width = 2, enum = { 0 = \"normal\", 1 = \"short\", 2 = \"open\", 3 = \"overload\" } }]\n",
        );
        let values = BTreeMap::from([
            ("loop1_state".to_string(), SimValue::Text("open".into())),
            ("loop2_state".into(), SimValue::Text("overload".into())),
        ]);
        assert_eq!(status_word(&m, &values), 0b1110);
    }

    #[test]
    fn payload_follows_the_pointers_of_the_map() {
        let mapping: PayloadMapping = toml::from_str(
            "device = \"/dev\"\ntimestamp = { pointer = \"/ts\", unit = \"s\" }\n\
             [[fields]]\npointer = \"/t/1\"\nquantity = \"t2\"\ntype = \"float\"\n\
             [[fields]]\npointer = \"/event\"\nquantity = \"event\"\ntype = \"text\"\n",
        )
        .expect("mapping");
        let values = BTreeMap::from([
            ("t2".to_string(), SimValue::Number(41.5)),
            ("event".to_string(), SimValue::Text("alarm".into())),
        ]);
        let json = json_payload(&mapping, &values, "d1", 1_718_000_000_500);
        assert_eq!(
            json,
            serde_json::json!({"dev": "d1", "ts": 1_718_000_000, "t": [null, 41.5], "event": "alarm"})
        );
    }
}
