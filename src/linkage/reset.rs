//! Device resets: an operator's Reset of a latched detector that still holds its alarm
//! becomes a write to the detector's reset register (a profile's `[reset]`), through the
//! connection's own task; the journal says what was written.

use super::*;

/// How each Modbus device with a profile `[reset]` is reset: (connection, unit, area,
/// address, value), by device id.
pub(super) struct DeviceResets(BTreeMap<String, (String, u8, PortOp)>);

impl DeviceResets {
    pub(super) fn from_config(config: &Config) -> Self {
        let mut out = BTreeMap::new();
        for link in &config.site.modbus {
            for unit in &link.units {
                let Some(device) = config.site.devices.iter().find(|d| d.id == unit.device) else {
                    continue;
                };
                let Some(reset) = config
                    .profiles
                    .get(&device.profile)
                    .and_then(|p| p.reset.as_ref())
                else {
                    continue;
                };
                out.insert(
                    device.id.clone(),
                    (
                        link.name.clone(),
                        unit.unit_id,
                        PortOp::Write {
                            area: reset.area,
                            address: reset.address,
                            value: reset.value,
                        },
                    ),
                );
            }
        }
        DeviceResets(out)
    }
}

/// A device reset write is given this long, queueing behind the bus's polls included.
const RESET_WRITE_LIMIT: Duration = Duration::from_secs(3);

impl Linkage {
    pub(super) fn reset_device(&mut self, event: &AlarmEvent) {
        let device = event.tags.device.clone();
        let key = event.key.to_string();
        let Some((connection, unit, op)) = self.resets.0.get(&device).cloned() else {
            return;
        };
        let ports = self.ports.clone();
        let notes = self.notes.clone();
        let operator = event.operator.clone();
        let tags = Arc::clone(&event.tags);
        tokio::spawn(async move {
            let result = ports.modbus(&connection, unit, op, RESET_WRITE_LIMIT).await;
            let PortOp::Write {
                area,
                address,
                value,
            } = op
            else {
                return;
            };
            let message = match result {
                Ok(_) => format!(
                    "device reset written ({area:?} {address} = {value}); waiting for the device to drop the alarm"
                ),
                Err(err) => {
                    warn!(device = %device, error = %err, "Device reset not written.");
                    format!("device reset NOT written ({area:?} {address} = {value}): {err}")
                }
            };
            let _ = notes.send(Note {
                key: Some(key),
                tags,
                output: device,
                message,
                operator,
            });
        });
    }
}
