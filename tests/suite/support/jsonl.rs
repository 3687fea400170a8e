//! A test counterpart run as a child process that reports JSON lines on stdout and takes
//! JSON-line commands on stdin (tests/interop/gb26875_centre.py, sms_receiver.py): its report
//! gathered by a thread, waits on it, commands acknowledged by `command_ok`. Killed on drop.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct JsonLines {
    child: Child,
    stdin: ChildStdin,
    events: Arc<Mutex<Vec<Value>>>,
    /// From its first line, `{"event": "listening", "port": N}`.
    pub port: u16,
}

impl JsonLines {
    /// Starts `command` (its stdin and stdout piped) and waits for it to listen.
    pub fn start(mut command: Command, what: &str) -> JsonLines {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let events = Arc::new(Mutex::new(Vec::new()));
        let gathered = Arc::clone(&events);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    gathered.lock().expect("events").push(v);
                }
            }
        });
        let mut child = JsonLines {
            child,
            stdin,
            events,
            port: 0,
        };
        let listening = child.wait("listening", Duration::from_secs(10), |e| {
            e["event"] == "listening"
        });
        child.port = listening["port"].as_u64().expect("port") as u16;
        child
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().expect("events").clone()
    }

    /// The first event that is `ready`, waiting at most `timeout`.
    pub fn wait(&self, what: &str, timeout: Duration, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| ready(e)) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; it saw: {:#?}",
                self.events()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a command and waits for one more `command_ok`.
    pub fn command(&mut self, command: Value) {
        let oks = |events: Vec<Value>| events.iter().filter(|e| e["event"] == "command_ok").count();
        let before = oks(self.events());
        writeln!(self.stdin, "{command}").expect("write the command");
        self.stdin.flush().expect("flush");
        let deadline = Instant::now() + Duration::from_secs(5);
        while oks(self.events()) == before {
            assert!(
                Instant::now() < deadline,
                "{command} not taken: {:#?}",
                self.events()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Asks it to quit, and kills it if it has not within 5 s.
    pub fn stop(mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for JsonLines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
