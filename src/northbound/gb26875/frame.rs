//! GB/T 26875.3 frames (数据包), pure: the start `@@`, the 25-byte control unit (serial number,
//! protocol version, time tag, source and destination addresses, length of the application
//! data, command), the application data (at most 1024 bytes), the checksum (the low byte of the
//! sum of the control unit and the application data) and the end `##`. Multi-byte fields go
//! low byte first. A `Decoder` finds frames in a TCP byte stream and says why bytes that are
//! not a frame were refused.

use crate::model::CivilTime;

/// The protocol's main version, fixed by the standard.
pub const MAIN_VERSION: u8 = 1;
/// The largest application data unit.
pub const MAX_UNIT_LEN: usize = 1024;
const CONTROL_LEN: usize = 25;
/// Start, control unit, checksum and end: a frame without application data.
pub const MIN_FRAME_LEN: usize = 2 + CONTROL_LEN + 1 + 2;

/// The command byte (table 2).
pub mod command {
    /// From the centre: e.g. clock sync, duty check.
    pub const CONTROL: u8 = 1;
    /// Fire alarms and facility states.
    pub const SEND_DATA: u8 = 2;
    /// The answer to control and send-data frames.
    pub const CONFIRM: u8 = 3;
    /// From the centre: a query.
    pub const REQUEST: u8 = 4;
    /// The answer to a request.
    pub const RESPONSE: u8 = 5;
    /// The refusal of a control or send-data frame (bad checksum, unknown command, ...).
    pub const DENY: u8 = 6;
}

/// A time tag (8.2.2): second, minute, hour, day, month, year - 2000, in local time.
pub type TimeTag = [u8; 6];

pub fn time_tag(at_ms: i64, utc_offset_minutes: i32) -> TimeTag {
    let t = CivilTime::at(at_ms, utc_offset_minutes);
    [
        t.second,
        t.minute,
        t.hour,
        t.day,
        t.month,
        (t.year - 2000).clamp(0, 99) as u8,
    ]
}

/// The milliseconds a time tag stands for; `None` when it is not a date.
pub fn tag_ms(tag: &TimeTag, utc_offset_minutes: i32) -> Option<i64> {
    CivilTime {
        year: 2000 + i64::from(tag[5]),
        month: tag[4],
        day: tag[3],
        hour: tag[2],
        minute: tag[1],
        second: tag[0],
    }
    .to_ms(utc_offset_minutes)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub serial: u16,
    pub user_version: u8,
    pub time: TimeTag,
    /// 6 bytes.
    pub source: u64,
    /// 6 bytes.
    pub destination: u64,
    pub command: u8,
    /// The application data unit; empty for confirm and deny.
    pub unit: Vec<u8>,
}

impl Frame {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MIN_FRAME_LEN + self.unit.len());
        out.extend_from_slice(b"@@");
        out.extend_from_slice(&self.serial.to_le_bytes());
        out.extend_from_slice(&[MAIN_VERSION, self.user_version]);
        out.extend_from_slice(&self.time);
        out.extend_from_slice(&self.source.to_le_bytes()[..6]);
        out.extend_from_slice(&self.destination.to_le_bytes()[..6]);
        let len = self.unit.len().min(MAX_UNIT_LEN) as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.push(self.command);
        out.extend_from_slice(&self.unit[..usize::from(len)]);
        out.push(checksum(&out[2..]));
        out.extend_from_slice(b"##");
        out
    }

    /// The answer (confirm or deny) to this frame, from the side it was sent to.
    pub fn answer(&self, command: u8, time: TimeTag) -> Frame {
        Frame {
            serial: self.serial,
            user_version: self.user_version,
            time,
            source: self.destination,
            destination: self.source,
            command,
            unit: Vec::new(),
        }
    }
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
}

fn address(bytes: &[u8]) -> u64 {
    let mut wide = [0u8; 8];
    wide[..6].copy_from_slice(&bytes[..6]);
    u64::from_le_bytes(wide)
}

/// Why bytes were refused (6.5.3), with the serial number when the control unit was read, so
/// that the sender can be denied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("{skipped} bytes before the start `@@`")]
    Start { skipped: usize },
    #[error("application data of {len} bytes, more than 1024")]
    Length { serial: u16, len: usize },
    #[error("no end `##` where the length says the frame ends")]
    End { serial: u16 },
    #[error("checksum {found:#04x}, computed {computed:#04x}")]
    Checksum {
        serial: u16,
        found: u8,
        computed: u8,
    },
    #[error("protocol version {major}, not 1")]
    Version { serial: u16, major: u8 },
}

impl FrameError {
    /// The serial number to deny, when the control unit could be read.
    pub fn serial(&self) -> Option<u16> {
        match self {
            FrameError::Start { .. } => None,
            FrameError::Length { serial, .. }
            | FrameError::End { serial }
            | FrameError::Checksum { serial, .. }
            | FrameError::Version { serial, .. } => Some(*serial),
        }
    }
}

/// Frames out of a byte stream. Bytes that do not start a frame are skipped up to the next
/// `@@`; a frame whose length or end is wrong is skipped from its start, so one bad frame
/// costs no good one behind it.
#[derive(Default)]
pub struct Decoder {
    buffer: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next frame or refusal, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Option<Result<Frame, FrameError>> {
        let start = self.buffer.windows(2).position(|w| w == b"@@");
        match start {
            None => {
                // Keep a trailing `@`, which may be half a start.
                let keep = usize::from(self.buffer.last() == Some(&b'@'));
                let skipped = self.buffer.len() - keep;
                if skipped == 0 {
                    return None;
                }
                self.buffer.drain(..skipped);
                return Some(Err(FrameError::Start { skipped }));
            }
            Some(skipped) if skipped > 0 => {
                self.buffer.drain(..skipped);
                return Some(Err(FrameError::Start { skipped }));
            }
            Some(_) => {}
        }
        if self.buffer.len() < 2 + CONTROL_LEN {
            return None;
        }
        let control = &self.buffer[2..2 + CONTROL_LEN];
        let serial = u16::from_le_bytes([control[0], control[1]]);
        let len = usize::from(u16::from_le_bytes([control[22], control[23]]));
        if len > MAX_UNIT_LEN {
            self.buffer.drain(..2);
            return Some(Err(FrameError::Length { serial, len }));
        }
        let total = MIN_FRAME_LEN + len;
        if self.buffer.len() < total {
            return None;
        }
        let frame: Vec<u8> = self.buffer[..total].to_vec();
        if &frame[total - 2..] != b"##" {
            self.buffer.drain(..2);
            return Some(Err(FrameError::End { serial }));
        }
        self.buffer.drain(..total);
        let computed = checksum(&frame[2..2 + CONTROL_LEN + len]);
        let found = frame[2 + CONTROL_LEN + len];
        if computed != found {
            return Some(Err(FrameError::Checksum {
                serial,
                found,
                computed,
            }));
        }
        let control = &frame[2..2 + CONTROL_LEN];
        if control[2] != MAIN_VERSION {
            return Some(Err(FrameError::Version {
                serial,
                major: control[2],
            }));
        }
        let mut time = [0u8; 6];
        time.copy_from_slice(&control[4..10]);
        Some(Ok(Frame {
            serial,
            user_version: control[3],
            time,
            source: address(&control[10..16]),
            destination: address(&control[16..22]),
            command: control[24],
            unit: frame[2 + CONTROL_LEN..2 + CONTROL_LEN + len].to_vec(),
        }))
    }

    /// Bytes waiting for the rest of a frame.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}
