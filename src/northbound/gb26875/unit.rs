//! GB/T 26875.3 application data units (应用数据单元), pure: a type flag, the number of
//! information objects, and the objects, each with its own time tag where the type has one.
//! Upward: facility component states and analog values, facility operation records, the
//! transmission device's own run state, operations and clock. Downward, from the centre: clock
//! sync and duty check (and reads, which are recognised and refused).

use super::frame::TimeTag;

/// Type flags (table 3).
pub mod flag {
    pub const COMPONENT_STATE: u8 = 2;
    pub const ANALOG_VALUE: u8 = 3;
    pub const OPERATION: u8 = 4;
    pub const DEVICE_STATE: u8 = 21;
    pub const DEVICE_OPERATION: u8 = 24;
    pub const DEVICE_TIME: u8 = 28;
    pub const CLOCK_SYNC: u8 = 90;
    pub const DUTY_CHECK: u8 = 91;
}

/// Component state bits (8.2.1.2).
pub mod state {
    /// 1 running, 0 test.
    pub const RUNNING: u16 = 1 << 0;
    pub const FIRE: u16 = 1 << 1;
    pub const FAULT: u16 = 1 << 2;
    /// 屏蔽: taken out of service.
    pub const DISABLED: u16 = 1 << 3;
    /// 监管.
    pub const SUPERVISORY: u16 = 1 << 4;
}

/// Operation bits of facility (8.2.1.4) and device (8.2.1.9) operation records.
pub mod operation {
    pub const RESET: u8 = 1 << 0;
    pub const SILENCE: u8 = 1 << 1;
    /// 警情消除: the alarm was cleared (here: judged a false alarm).
    pub const ALARM_CLEARED: u8 = 1 << 3;
    /// 确认 (facility records): the fire was confirmed.
    pub const CONFIRM: u8 = 1 << 5;
    /// 查岗应答 (device records): an operator answered the duty check.
    pub const DUTY_ANSWER: u8 = 1 << 5;
}

/// The transmission device's run state bits (8.2.1.8).
pub mod device_state {
    /// 1 normal watch, 0 test.
    pub const NORMAL: u8 = 1 << 0;
    pub const FIRE: u8 = 1 << 1;
    pub const FAULT: u8 = 1 << 2;
    pub const CHANNEL_FAULT: u8 = 1 << 5;
}

/// Analog types (table 6) parkguard reports, with their unit step.
pub mod analog {
    /// 0.1 °C.
    pub const TEMPERATURE: u8 = 3;
    /// 0.1 %LEL.
    pub const GAS_CONCENTRATION: u8 = 6;
    /// 0.1 V.
    pub const VOLTAGE: u8 = 8;
    /// 0.1 A.
    pub const CURRENT: u8 = 9;
}

/// Where a component is: system type and address, component type and address, and the
/// description the centre shows (GB18030, at most 31 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub system_type: u8,
    pub system_address: u8,
    pub component_type: u8,
    pub component_address: u32,
    pub description: Vec<u8>,
}

impl Component {
    fn put_place(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.system_type, self.system_address, self.component_type]);
        out.extend_from_slice(&self.component_address.to_le_bytes());
    }
}

/// A component's state word (type 2), one object.
pub fn component_state(component: &Component, state: u16, at: TimeTag) -> Vec<u8> {
    let mut out = vec![flag::COMPONENT_STATE, 1];
    component.put_place(&mut out);
    out.extend_from_slice(&state.to_le_bytes());
    let mut description = [0u8; 31];
    let n = component.description.len().min(31);
    description[..n].copy_from_slice(&component.description[..n]);
    out.extend_from_slice(&description);
    out.extend_from_slice(&at);
    out
}

/// A component's analog value (type 3), `value` in the type's unit step.
pub fn analog_value(component: &Component, analog_type: u8, value: i16, at: TimeTag) -> Vec<u8> {
    let mut out = vec![flag::ANALOG_VALUE, 1];
    component.put_place(&mut out);
    out.push(analog_type);
    out.extend_from_slice(&value.to_le_bytes());
    out.extend_from_slice(&at);
    out
}

/// A facility operation record (type 4).
pub fn operation_record(component: &Component, bits: u8, operator: u8, at: TimeTag) -> Vec<u8> {
    let mut out = vec![
        flag::OPERATION,
        1,
        component.system_type,
        component.system_address,
        bits,
        operator,
    ];
    out.extend_from_slice(&at);
    out
}

/// The transmission device's run state (type 21).
pub fn device_state(bits: u8, at: TimeTag) -> Vec<u8> {
    let mut out = vec![flag::DEVICE_STATE, 1, bits];
    out.extend_from_slice(&at);
    out
}

/// A transmission device operation record (type 24).
pub fn device_operation(bits: u8, operator: u8, at: TimeTag) -> Vec<u8> {
    let mut out = vec![flag::DEVICE_OPERATION, 1, bits, operator];
    out.extend_from_slice(&at);
    out
}

/// What the centre sent down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Downlink {
    /// Set the clock to this local time.
    ClockSync(TimeTag),
    /// An operator must answer within this many minutes.
    DutyCheck { timeout_minutes: u8 },
    /// Anything else parkguard does not do (reads, initialisation): denied.
    Unsupported { flag: u8 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("empty application data")]
    Empty,
    #[error("type {flag}: {len} bytes, expected {expected}")]
    Size {
        flag: u8,
        len: usize,
        expected: usize,
    },
}

pub fn parse_downlink(unit: &[u8]) -> Result<Downlink, UnitError> {
    let (&flag, _) = unit.split_first().ok_or(UnitError::Empty)?;
    let need = |expected: usize| {
        if unit.len() == expected {
            Ok(())
        } else {
            Err(UnitError::Size {
                flag,
                len: unit.len(),
                expected,
            })
        }
    };
    match flag {
        flag::CLOCK_SYNC => {
            need(2 + 6)?;
            let mut tag = [0u8; 6];
            tag.copy_from_slice(&unit[2..8]);
            Ok(Downlink::ClockSync(tag))
        }
        flag::DUTY_CHECK => {
            need(2 + 1)?;
            Ok(Downlink::DutyCheck {
                timeout_minutes: unit[2],
            })
        }
        flag => Ok(Downlink::Unsupported { flag }),
    }
}
