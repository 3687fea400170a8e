//! Commissioning for technicians: reading a device's registers, testing its profile, signing it
//! off.

use super::*;

/// The Modbus connection, unit id and profile of a configured device.
fn modbus_device(
    state: &Shared,
    device: &str,
) -> Option<(crate::config::ModbusLink, u8, crate::config::Profile)> {
    let site = &state.config.site;
    let profile_id = &site.devices.iter().find(|d| d.id == device)?.profile;
    let profile = state.config.profiles.get(profile_id)?.clone();
    site.modbus.iter().find_map(|m| {
        m.units
            .iter()
            .find(|u| u.device == device)
            .map(|u| (m.link(), u.unit_id, profile.clone()))
    })
}

/// How long a commissioning read may wait for the device.
const COMMISSIONING_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadRequest {
    device: String,
    /// holding, input, coil or discrete.
    area: String,
    /// As the manual counts (see `base`).
    address: u16,
    count: u16,
    #[serde(default)]
    base: u16,
}

/// Reads raw words from a configured Modbus device for a technician: the words and every
/// type in all four word orders.
pub async fn commissioning_read(
    State(state): State<Shared>,
    _: Require<Technician>,
    request: Result<Json<ReadRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    use crate::decode::registers::Area;
    let request = match json_body(request) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let (area, max) = match request.area.as_str() {
        "holding" => (Area::Holding, 125),
        "input" => (Area::Input, 125),
        "coil" => (Area::Coil, 2000),
        "discrete" => (Area::DiscreteInput, 2000),
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown area `{other}`: holding, input, coil or discrete"),
            )
        }
    };
    if request.count == 0 || request.count > max {
        return error(StatusCode::BAD_REQUEST, format!("count must be 1 to {max}"));
    }
    let Some(wire) = request.address.checked_sub(request.base) else {
        return error(StatusCode::BAD_REQUEST, "address below the base");
    };
    if u32::from(wire) + u32::from(request.count) > 65_536 {
        return error(
            StatusCode::BAD_REQUEST,
            "address and count run past the last address (65535)",
        );
    }
    let Some((link, unit, _)) = modbus_device(&state, &request.device) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("`{}` is not a Modbus device of this site", request.device),
        );
    };
    let answer = crate::ingest::modbus::read_once(
        &link,
        unit,
        area,
        wire,
        request.count,
        COMMISSIONING_TIMEOUT,
    )
    .await;
    match answer {
        Ok(words) => {
            let (words_table, orders_table) = if area.is_bit() {
                let bits: Vec<bool> = words.iter().map(|w| *w != 0).collect();
                (
                    crate::decode::inspect::bits_table(request.address, &bits),
                    String::new(),
                )
            } else {
                (
                    crate::decode::inspect::words_table(request.address, &words),
                    crate::decode::inspect::every_order_table(request.address, &words),
                )
            };
            Json(
                json!({ "words": words, "words_table": words_table, "orders_table": orders_table }),
            )
            .into_response()
        }
        Err(err) => error(StatusCode::BAD_GATEWAY, err.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRequest {
    device: String,
}

/// Polls a configured Modbus device once with its profile and judges every value.
pub async fn commissioning_profile_test(
    State(state): State<Shared>,
    _: Require<Technician>,
    request: Result<Json<DeviceRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match json_body(request) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let Some((link, unit, profile)) = modbus_device(&state, &request.device) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("`{}` is not a Modbus device of this site", request.device),
        );
    };
    match crate::ingest::modbus::profile_test(&link, unit, &profile, COMMISSIONING_TIMEOUT).await {
        Ok(result) => Json(json!({
            "checks": result.checks,
            "failures": result.failures,
            "flags_set": result.flags_set(),
            "implausible": result.implausible(),
        }))
        .into_response(),
        Err(err) => error(StatusCode::BAD_REQUEST, err),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignOffRequest {
    device: String,
    #[serde(default)]
    firmware: Option<String>,
    #[serde(default)]
    notes: String,
}

/// Records that a technician commissioned a device.
pub async fn signoff(
    State(state): State<Shared>,
    Require(caller, _): Require<Technician>,
    request: Result<Json<SignOffRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match json_body(request) {
        Ok(request) => request,
        Err(response) => return response,
    };
    if !state
        .config
        .site
        .devices
        .iter()
        .any(|d| d.id == request.device)
    {
        return error(
            StatusCode::NOT_FOUND,
            format!("no device `{}`", request.device),
        );
    }
    let too_long = |t: &str| t.chars().count() > MAX_TEXT;
    if too_long(&request.notes) || request.firmware.as_deref().is_some_and(too_long) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("notes and firmware are at most {MAX_TEXT} characters"),
        );
    }
    let record = crate::store::SignOff {
        device: request.device,
        at_ms: now_ms(),
        technician: caller.name.clone(),
        firmware: request.firmware.filter(|f| !f.trim().is_empty()),
        notes: request.notes,
    };
    let stored = record.clone();
    match on_store(&state, "sign-off", move |s| s.add_signoff(&stored)).await {
        Ok(()) => {
            tracing::info!(device = %record.device, technician = %record.technician, "Device signed off.");
            Json(record).into_response()
        }
        Err(response) => response,
    }
}
