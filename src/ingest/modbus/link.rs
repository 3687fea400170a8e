//! Opening a Modbus link (TCP, RTU over TCP, a serial port) under a timeout, with errors
//! that say what to check; and the one-shot operations commissioning and linkage use: writes,
//! reads, a profile test. The poller (`super`) and the commissioning commands share them.

use super::*;

/// Why a connection to a Modbus device could not be opened. Callers tell them apart: a serial
/// port the user may not open needs the dialout group, one that is busy needs the other program
/// stopped, a timeout or refusal needs the device or the network checked.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("no connection within {0} ms")]
    Timeout(u128),
    #[error("`{0}` resolves to no address")]
    NoAddress(String),
    #[error("{0}")]
    Network(#[from] std::io::Error),
    #[error("{path}: {source}")]
    SerialPort {
        path: String,
        source: tokio_serial::Error,
    },
}

impl LinkError {
    /// What to do about it, when the cause says (the serial port's permissions or a busy port).
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            LinkError::SerialPort { source, .. } => match source.kind {
                tokio_serial::ErrorKind::Io(std::io::ErrorKind::PermissionDenied) => Some(
                    "the port belongs to the dialout group: add this user to it (usermod -aG dialout USER, then log in again)",
                ),
                tokio_serial::ErrorKind::NoDevice => {
                    Some("no such port, or another program holds it (check with fuser or lsof)")
                }
                _ => None,
            },
            _ => None,
        }
    }
}

/// Opens a connection over `link`, within `limit`.
pub async fn connect(link: &ModbusLink, limit: Duration) -> Result<Context, LinkError> {
    let address = link.address.as_str();
    let attempt = async {
        if link.transport == ModbusTransport::Rtu {
            return open_serial(address, &link.serial).map(tokio_modbus::client::rtu::attach);
        }
        let addr = lookup_host(address)
            .await?
            .next()
            .ok_or_else(|| LinkError::NoAddress(address.to_string()))?;
        match link.transport {
            ModbusTransport::Tcp => Ok(tokio_modbus::client::tcp::connect(addr).await?),
            ModbusTransport::RtuOverTcp | ModbusTransport::Rtu => {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                Ok(tokio_modbus::client::rtu::attach(stream))
            }
        }
    };
    timeout(limit, attempt)
        .await
        .map_err(|_| LinkError::Timeout(limit.as_millis()))?
}

/// Opens a serial port with `settings`, exclusively, with anything a device sent before
/// (a late answer to a request that timed out) thrown away.
pub fn open_serial(path: &str, settings: &SerialConfig) -> Result<SerialStream, LinkError> {
    let builder = tokio_serial::new(path, settings.baud)
        .data_bits(match settings.data_bits {
            7 => DataBits::Seven,
            _ => DataBits::Eight,
        })
        .parity(match settings.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .stop_bits(match settings.stop_bits {
            2 => StopBits::Two,
            _ => StopBits::One,
        })
        .flow_control(FlowControl::None);
    let serial = |source| LinkError::SerialPort {
        path: path.to_string(),
        source,
    };
    let port = SerialStream::open(&builder).map_err(serial)?;
    port.clear(ClearBuffer::All).map_err(serial)?;
    Ok(port)
}

/// A write for commissioning and for resetting latched detectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Function 06 (one word) or 16 (several).
    Registers { start: u16, words: Vec<u16> },
    /// Function 05 (one bit) or 15 (several).
    Coils { start: u16, bits: Vec<bool> },
}

/// Why a commissioning read or write failed. An exception means a device answered (it is
/// there, and refused this request); the others mean nothing usable came back.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("unit {unit} gave no answer within {after_ms} ms")]
    NoAnswer { unit: u8, after_ms: u128 },
    #[error("{0}")]
    Transport(String),
    #[error("the device refused the request: {0}")]
    Exception(String),
    #[error("nothing to write")]
    Empty,
}

/// Writes to one unit over a connection of its own, every step within `limit`.
pub async fn write(
    link: &ModbusLink,
    unit_id: u8,
    request: &Write,
    limit: Duration,
) -> Result<(), RequestError> {
    if is_empty(request) {
        return Err(RequestError::Empty);
    }
    let mut ctx = connect(link, limit).await?;
    ctx.set_slave(Slave(unit_id));
    let sent = timeout(limit, async {
        match request {
            Write::Registers { start, words } if words.len() == 1 => {
                ctx.write_single_register(*start, words[0]).await
            }
            Write::Registers { start, words } => ctx.write_multiple_registers(*start, words).await,
            Write::Coils { start, bits } if bits.len() == 1 => {
                ctx.write_single_coil(*start, bits[0]).await
            }
            Write::Coils { start, bits } => ctx.write_multiple_coils(*start, bits).await,
        }
    })
    .await;
    let _ = timeout(limit, ctx.disconnect()).await;
    match sent {
        Err(_) => Err(RequestError::NoAnswer {
            unit: unit_id,
            after_ms: limit.as_millis(),
        }),
        Ok(Err(err)) => Err(RequestError::Transport(err.to_string())),
        Ok(Ok(Err(exception))) => Err(RequestError::Exception(format!("{exception:?}"))),
        Ok(Ok(Ok(()))) => Ok(()),
    }
}

/// One read request of any area; bits come back as 0/1 words.
pub(super) async fn read_area(
    ctx: &mut Context,
    area: Area,
    start: u16,
    count: u16,
) -> tokio_modbus::Result<Vec<u16>> {
    let as_words = |bits: Vec<bool>| bits.into_iter().map(u16::from).collect();
    match area {
        Area::Holding => ctx.read_holding_registers(start, count).await,
        Area::Input => ctx.read_input_registers(start, count).await,
        Area::Coil => ctx.read_coils(start, count).await.map(|r| r.map(as_words)),
        Area::DiscreteInput => ctx
            .read_discrete_inputs(start, count)
            .await
            .map(|r| r.map(as_words)),
    }
}

/// One read for commissioning, over a connection of its own, every step within `limit`.
/// Bits (coils, discrete inputs) come back as 0/1 words. Errors say whether the device refused
/// (an exception) or never answered.
pub async fn read_once(
    link: &ModbusLink,
    unit_id: u8,
    area: Area,
    start: u16,
    count: u16,
    limit: Duration,
) -> Result<Vec<u16>, RequestError> {
    let mut ctx = connect(link, limit).await?;
    ctx.set_slave(Slave(unit_id));
    let answer = timeout(limit, read_area(&mut ctx, area, start, count)).await;
    let _ = timeout(limit, ctx.disconnect()).await;
    match answer {
        Err(_) => Err(RequestError::NoAnswer {
            unit: unit_id,
            after_ms: limit.as_millis(),
        }),
        Ok(Err(err)) => Err(RequestError::Transport(err.to_string())),
        Ok(Ok(Err(exception))) => Err(RequestError::Exception(format!("{exception:?}"))),
        Ok(Ok(Ok(mut words))) => {
            // Bit reads come padded to whole bytes.
            words.truncate(usize::from(count));
            Ok(words)
        }
    }
}

/// What polling a device once with a profile found (`parkguard modbus profile-test` and the
/// web UI's commissioning page).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProfileTest {
    pub checks: Vec<crate::decode::inspect::ProfileCheck>,
    /// Reads that failed: area, addresses, the quantities they carry, and why.
    pub failures: Vec<String>,
}

impl ProfileTest {
    /// Flags (named status bits) that are set.
    pub fn flags_set(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| c.verdict == "flag SET")
            .map(|c| c.quantity.as_str())
            .collect()
    }

    /// Values that are out of range, sensor-open or implausible.
    pub fn implausible(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| {
                c.verdict.starts_with("OUT OF RANGE")
                    || c.verdict.starts_with("INVALID")
                    || c.verdict.starts_with("IMPLAUSIBLE")
            })
            .count()
    }
}

/// Polls one unit once with every register of `profile` (every poll class), over connections
/// of its own, and judges each value.
pub async fn profile_test(
    link: &ModbusLink,
    unit_id: u8,
    profile: &crate::config::Profile,
    limit: Duration,
) -> Result<ProfileTest, String> {
    let modbus = profile
        .modbus
        .as_ref()
        .ok_or("the profile has no [modbus] register map")?;
    let decoders: Vec<RegisterDecoder> = modbus
        .registers
        .iter()
        .map(|r| RegisterDecoder::new(r, modbus.address_base))
        .collect();
    let mut classes: Vec<&str> = decoders.iter().map(|d| d.poll_class()).collect();
    classes.sort();
    classes.dedup();
    let tags = Arc::new(Tags::default());
    let measurement: Arc<str> = Arc::from(profile.measurement());
    let now = now_ns();
    let mut readings = Vec::new();
    let mut failures = Vec::new();
    for class in classes {
        for request in plan(&decoders, class, PlanOptions::from(modbus)) {
            match read_once(
                link,
                unit_id,
                request.area,
                request.start,
                request.count,
                limit,
            )
            .await
            {
                Ok(words) => {
                    for &i in &request.values {
                        let decoder = &decoders[i];
                        let offset = usize::from(decoder.pdu_address - request.start);
                        let width = usize::from(decoder.width());
                        let slice = words.get(offset..offset + width).unwrap_or(&[]);
                        decoder.readings(slice, &tags, &measurement, now, &mut readings);
                    }
                }
                Err(err) => {
                    let names: Vec<&str> = request
                        .values
                        .iter()
                        .map(|&i| decoders[i].quantity())
                        .collect();
                    failures.push(format!(
                        "{:?} {}..{} ({}): {err}",
                        request.area,
                        request.start,
                        u32::from(request.start) + u32::from(request.count) - 1,
                        names.join(", ")
                    ));
                }
            }
        }
    }
    Ok(ProfileTest {
        checks: crate::decode::inspect::check_readings(&modbus.registers, &readings),
        failures,
    })
}

pub(super) fn is_empty(request: &Write) -> bool {
    match request {
        Write::Registers { words, .. } => words.is_empty(),
        Write::Coils { bits, .. } => bits.is_empty(),
    }
}
