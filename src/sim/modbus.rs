//! A Modbus server (tokio-modbus `Service`; TCP, RTU over TCP, RTU on a serial device)
//! answering for several units from register banks. Each unit can be switched to answer with
//! an exception or not at all, to test fault handling against a real protocol stack rather
//! than a mock.

use std::collections::HashMap;
use std::future::{ready, Ready};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};

use crate::decode::registers::Area;

/// How a simulated unit answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Normal,
    /// Every request gets this exception (e.g. `ServerDeviceBusy`, 0x06).
    Exception(ExceptionCode),
    /// Every other request gets this exception, the rest are answered.
    ExceptionEveryOther(ExceptionCode),
    /// No answer at all, like a unit with a broken wire.
    Silent,
}

#[derive(Debug)]
pub struct SimulatedUnit {
    words: Mutex<HashMap<(Area, u16), u16>>,
    behaviour: Mutex<Behaviour>,
    requests: Mutex<u64>,
    /// When each request arrived, for cadence measurements.
    arrivals: Mutex<Vec<std::time::Instant>>,
    /// What the unit does of itself after a write: a relay module's limit switch following
    /// its coil, a detector dropping its latch on a reset.
    reactions: Mutex<Reactions>,
}

/// One word of a unit: (area, address, value).
type Word = (Area, u16, u16);

/// A unit's own reactions to writes.
#[derive(Debug, Default)]
struct Reactions {
    /// Coil -> discrete input that follows it (a valve's limit switch).
    mirrors: Vec<(u16, u16)>,
    /// Writes are answered but change nothing: a valve jammed open, a relay with a burnt
    /// coil.
    refuse_writes: bool,
    /// A write of (area, address, value) -> the words the unit then sets itself.
    on_write: Vec<(Word, Vec<Word>)>,
    /// Write requests received, refused ones included.
    writes: u64,
}

impl Default for SimulatedUnit {
    fn default() -> Self {
        SimulatedUnit {
            words: Mutex::new(HashMap::new()),
            behaviour: Mutex::new(Behaviour::Normal),
            requests: Mutex::new(0),
            arrivals: Mutex::new(Vec::new()),
            reactions: Mutex::new(Reactions::default()),
        }
    }
}

impl SimulatedUnit {
    pub fn set_words(&self, area: Area, start: u16, words: &[u16]) {
        let mut bank = self.words.lock().unwrap_or_else(|e| e.into_inner());
        for (i, w) in words.iter().enumerate() {
            bank.insert((area, start.wrapping_add(i as u16)), *w);
        }
    }

    /// The word (or bit, as 0/1) a unit holds now, e.g. after a write.
    pub fn word(&self, area: Area, address: u16) -> Option<u16> {
        let bank = self.words.lock().unwrap_or_else(|e| e.into_inner());
        bank.get(&(area, address)).copied()
    }

    /// Discrete input `input` follows coil `coil` after every accepted write (a valve's
    /// limit switch, a contactor's auxiliary contact).
    pub fn mirror_coil(&self, coil: u16, input: u16) {
        self.reactions().mirrors.push((coil, input));
    }

    /// Writes are acknowledged but change nothing (a jammed valve).
    pub fn set_refuse_writes(&self, refuse: bool) {
        self.reactions().refuse_writes = refuse;
    }

    /// After `value` is written to `address` of `area`, the unit sets `then` itself (a
    /// detector clearing its latched status bits on a reset).
    pub fn on_write(&self, area: Area, address: u16, value: u16, then: Vec<(Area, u16, u16)>) {
        self.reactions()
            .on_write
            .push(((area, address, value), then));
    }

    /// Write requests received so far, refused ones included.
    pub fn writes(&self) -> u64 {
        self.reactions().writes
    }

    fn reactions(&self) -> std::sync::MutexGuard<'_, Reactions> {
        self.reactions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A write from the bus, with the unit's reactions.
    fn written(&self, area: Area, start: u16, words: &[u16]) {
        let (mirrors, effects) = {
            let mut reactions = self.reactions();
            reactions.writes += 1;
            if reactions.refuse_writes {
                return;
            }
            let effects: Vec<Word> = reactions
                .on_write
                .iter()
                .filter(|((a, addr, value), _)| {
                    *a == area
                        && (start..start.saturating_add(words.len() as u16)).contains(addr)
                        && words.get(usize::from(addr - start)) == Some(value)
                })
                .flat_map(|(_, then)| then.iter().copied())
                .collect();
            (reactions.mirrors.clone(), effects)
        };
        self.set_words(area, start, words);
        if area == Area::Coil {
            for (coil, input) in mirrors {
                if let Some(w) = words.get(usize::from(coil.wrapping_sub(start))) {
                    self.set_words(Area::DiscreteInput, input, &[*w]);
                }
            }
        }
        for (a, address, value) in effects {
            self.set_words(a, address, &[value]);
        }
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap_or_else(|e| e.into_inner()) = behaviour;
    }

    /// Requests addressed to this unit so far, answered or not.
    pub fn requests(&self) -> u64 {
        *self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arrival times of the requests since the last call, oldest first.
    pub fn take_arrivals(&self) -> Vec<std::time::Instant> {
        std::mem::take(&mut *self.arrivals.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn read(&self, area: Area, start: u16, count: u16) -> Vec<u16> {
        let bank = self.words.lock().unwrap_or_else(|e| e.into_inner());
        (0..count)
            .map(|i| {
                bank.get(&(area, start.wrapping_add(i)))
                    .copied()
                    .unwrap_or(0)
            })
            .collect()
    }

    fn answer(&self, request: &Request<'_>) -> Result<Option<Response>, ExceptionCode> {
        let n = {
            let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
            *requests += 1;
            *requests
        };
        {
            let mut arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
            // Bounded so that a long-running simulator does not grow without limit.
            if arrivals.len() >= 100_000 {
                arrivals.clear();
            }
            arrivals.push(std::time::Instant::now());
        }
        match *self.behaviour.lock().unwrap_or_else(|e| e.into_inner()) {
            Behaviour::Normal => {}
            Behaviour::Exception(code) => return Err(code),
            Behaviour::ExceptionEveryOther(code) if n % 2 == 0 => return Err(code),
            Behaviour::ExceptionEveryOther(_) => {}
            Behaviour::Silent => return Ok(None),
        }
        let bits = |words: Vec<u16>| words.into_iter().map(|w| w != 0).collect();
        Ok(Some(match request {
            Request::ReadHoldingRegisters(a, c) => {
                Response::ReadHoldingRegisters(self.read(Area::Holding, *a, *c))
            }
            Request::ReadInputRegisters(a, c) => {
                Response::ReadInputRegisters(self.read(Area::Input, *a, *c))
            }
            Request::ReadCoils(a, c) => Response::ReadCoils(bits(self.read(Area::Coil, *a, *c))),
            Request::ReadDiscreteInputs(a, c) => {
                Response::ReadDiscreteInputs(bits(self.read(Area::DiscreteInput, *a, *c)))
            }
            Request::WriteSingleRegister(a, w) => {
                self.written(Area::Holding, *a, &[*w]);
                Response::WriteSingleRegister(*a, *w)
            }
            Request::WriteMultipleRegisters(a, words) => {
                self.written(Area::Holding, *a, words);
                Response::WriteMultipleRegisters(*a, words.len() as u16)
            }
            Request::WriteSingleCoil(a, on) => {
                self.written(Area::Coil, *a, &[u16::from(*on)]);
                Response::WriteSingleCoil(*a, *on)
            }
            _ => return Err(ExceptionCode::IllegalFunction),
        }))
    }
}

/// Units by unit id behind one TCP listener (a Modbus TCP device, or a gateway to a bus).
#[derive(Debug, Clone, Default)]
pub struct SimulatedBus {
    units: Arc<HashMap<u8, Arc<SimulatedUnit>>>,
}

impl SimulatedBus {
    pub fn new(unit_ids: impl IntoIterator<Item = u8>) -> Self {
        SimulatedBus {
            units: Arc::new(
                unit_ids
                    .into_iter()
                    .map(|id| (id, Arc::new(SimulatedUnit::default())))
                    .collect(),
            ),
        }
    }

    pub fn unit(&self, id: u8) -> Option<Arc<SimulatedUnit>> {
        self.units.get(&id).cloned()
    }

    /// Serves Modbus TCP on `listener` until the task is dropped.
    pub async fn serve_tcp(self, listener: TcpListener) -> std::io::Result<()> {
        let on_connected = |stream, addr: SocketAddr| {
            let bus = self.clone();
            async move { accept_tcp_connection(stream, addr, move |_| Ok(Some(bus.clone()))) }
        };
        Server::new(listener).serve(&on_connected, |_err| {}).await
    }

    /// Serves RTU frames over TCP on `listener`, like a serial server in transparent mode.
    pub async fn serve_rtu_over_tcp(self, listener: TcpListener) -> std::io::Result<()> {
        use tokio_modbus::server::rtu_over_tcp;
        let on_connected = |stream, addr: SocketAddr| {
            let bus = self.clone();
            async move {
                rtu_over_tcp::accept_tcp_connection(stream, addr, move |_| Ok(Some(bus.clone())))
            }
        };
        rtu_over_tcp::Server::new(listener)
            .serve(&on_connected, |_err| {})
            .await
    }
}

impl SimulatedBus {
    /// Serves RTU on a serial device (one end of a pseudo-terminal pair, or a real RS-485
    /// adapter) until the task is dropped.
    pub async fn serve_rtu_serial(
        self,
        path: &str,
        settings: &crate::config::SerialConfig,
    ) -> std::io::Result<()> {
        let port =
            crate::ingest::modbus::open_serial(path, settings).map_err(std::io::Error::other)?;
        tokio_modbus::server::rtu::Server::new(port)
            .serve_forever(self)
            .await
    }
}

impl tokio_modbus::server::Service for SimulatedBus {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        match self.units.get(&req.slave) {
            // An absent unit on a bus does not answer.
            None => ready(Ok(None)),
            Some(unit) => ready(unit.answer(&req.request)),
        }
    }
}
