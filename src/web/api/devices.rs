//! Devices with their latest values, and the local history for charts.

use super::*;

#[derive(Serialize)]
struct DeviceView<'a> {
    id: &'a str,
    name: Option<&'a str>,
    park: &'a str,
    park_name: Option<&'a str>,
    enterprise: &'a str,
    enterprise_name: Option<&'a str>,
    location: &'a str,
    location_name: Option<&'a str>,
    kind: &'a str,
    profile: &'a str,
    status: crate::web::DeviceStatus,
    /// Alarms of the device that are not normal.
    alarms: usize,
    /// Polled over Modbus (so the commissioning page can read it).
    modbus: bool,
    /// The newest commissioning sign-off.
    signoff: Option<crate::store::SignOff>,
    /// How the gateway hears the device, as configured.
    link: Option<LinkView<'a>>,
    #[serde(flatten)]
    latest: DeviceLatest,
}

/// How a device reaches the gateway: its Modbus connection and unit, the MQTT connection
/// whose subscription decodes its profile, or the carrier platform's push endpoint.
#[derive(Serialize, Clone)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum LinkView<'a> {
    Modbus {
        connection: &'a str,
        transport: &'static str,
        address: &'a str,
        unit_id: u8,
    },
    Mqtt {
        connection: &'a str,
        topic: &'a str,
    },
    Platform {
        endpoint: &'a str,
        platform: &'static str,
    },
}

/// Every declared device with its place, status and latest values, in park, enterprise,
/// location and id order.
pub async fn devices(State(state): State<Shared>, _caller: Caller) -> Response {
    let signoffs = on_store(&state, "sign-off read", |s| s.latest_signoffs())
        .await
        .unwrap_or_default();
    let site = &state.config.site;
    let latest = state.latest.all();
    let alarms = state.hub.alarms();
    // Lookups by id: the list is built for every refresh of every open device page.
    let park_names: HashMap<&str, Option<&str>> = site
        .parks
        .iter()
        .map(|p| (p.id.as_str(), p.name.as_deref()))
        .collect();
    let enterprises: HashMap<&str, (&str, Option<&str>)> = site
        .enterprises
        .iter()
        .map(|e| (e.id.as_str(), (e.park.as_str(), e.name.as_deref())))
        .collect();
    let locations: HashMap<&str, (&str, Option<&str>)> = site
        .locations
        .iter()
        .map(|l| (l.id.as_str(), (l.enterprise.as_str(), l.name.as_deref())))
        .collect();
    let mut alarms_of: HashMap<&str, Vec<&AlarmView>> = HashMap::new();
    for a in &alarms {
        alarms_of.entry(a.device.as_str()).or_default().push(a);
    }
    let polled: HashMap<&str, LinkView> = site
        .modbus
        .iter()
        .flat_map(|m| {
            m.units.iter().map(move |u| {
                let link = LinkView::Modbus {
                    connection: &m.name,
                    transport: m.transport.as_str(),
                    address: &m.address,
                    unit_id: u.unit_id,
                };
                (u.device.as_str(), link)
            })
        })
        .collect();
    // Devices that publish or are pushed are found by their profile: the first subscription
    // or endpoint that decodes it.
    let mut by_profile: HashMap<&str, LinkView> = HashMap::new();
    for e in &site.http_ingest {
        by_profile
            .entry(e.profile.as_str())
            .or_insert(LinkView::Platform {
                endpoint: &e.name,
                platform: e.platform.as_str(),
            });
    }
    for m in &site.mqtt {
        for s in &m.subscriptions {
            by_profile
                .entry(s.profile.as_str())
                .or_insert(LinkView::Mqtt {
                    connection: &m.name,
                    topic: &s.topic,
                });
        }
    }
    let signoffs: HashMap<String, crate::store::SignOff> = signoffs
        .into_iter()
        .map(|s| (s.device.clone(), s))
        .collect();
    let mut list: Vec<DeviceView> = site
        .devices
        .iter()
        .map(|d| {
            let location = locations.get(d.location.as_str());
            let enterprise_id = location.map_or("", |l| l.0);
            let enterprise = enterprises.get(enterprise_id);
            let park_id = enterprise.map_or("", |e| e.0);
            let kind = d.kind.as_deref().unwrap_or_else(|| {
                state
                    .config
                    .profiles
                    .get(&d.profile)
                    .map_or("", |p| p.kind.as_str())
            });
            let seen = latest.get(&d.id).cloned().unwrap_or_default();
            let own = alarms_of.get(d.id.as_str()).map_or(&[][..], Vec::as_slice);
            DeviceView {
                id: &d.id,
                name: d.name.as_deref(),
                park: park_id,
                park_name: park_names.get(park_id).copied().flatten(),
                enterprise: enterprise_id,
                enterprise_name: enterprise.and_then(|e| e.1),
                location: &d.location,
                location_name: location.and_then(|l| l.1),
                kind,
                profile: &d.profile,
                status: crate::web::hub::device_status(
                    own.iter().copied(),
                    seen.last_seen_ms.is_some(),
                ),
                alarms: own.len(),
                modbus: polled.contains_key(d.id.as_str()),
                signoff: signoffs.get(&d.id).cloned(),
                link: polled
                    .get(d.id.as_str())
                    .or_else(|| by_profile.get(d.profile.as_str()))
                    .cloned(),
                latest: seen,
            }
        })
        .collect();
    list.sort_by(|a, b| {
        (a.park, a.enterprise, a.location, a.id).cmp(&(b.park, b.enterprise, b.location, b.id))
    });
    Json(list).into_response()
}

#[derive(Serialize)]
struct ProfileView<'a> {
    kind: &'a str,
    manufacturer: Option<&'a str>,
    model: Option<&'a str>,
    /// The named quantities in the order shown.
    quantities: &'a [crate::config::QuantityInfo],
}

/// Every profile with its named quantities, by profile id: fetched once by the UI, so that
/// the device list (which can hold thousands of devices) does not repeat them per device.
pub async fn profiles(State(state): State<Shared>, _caller: Caller) -> Response {
    let views: BTreeMap<&str, ProfileView> = state
        .config
        .profiles
        .iter()
        .map(|(id, p)| {
            let view = ProfileView {
                kind: &p.kind,
                manufacturer: p.manufacturer.as_deref(),
                model: p.model.as_deref(),
                quantities: &p.quantities,
            };
            (id.as_str(), view)
        })
        .collect();
    Json(views).into_response()
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    device: String,
    quantity: String,
    /// How far back, in hours (default 1).
    hours: Option<f64>,
}

pub async fn history(
    State(state): State<Shared>,
    _caller: Caller,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(err) => return error(StatusCode::BAD_REQUEST, err.body_text()),
    };
    let hours = query.hours.unwrap_or(1.0);
    if !(hours.is_finite() && hours > 0.0 && hours <= 24.0 * 366.0) {
        return error(StatusCode::BAD_REQUEST, "hours must be above 0");
    }
    let since = now_ms() - (hours * 3_600_000.0) as i64;
    let read = move |s: &mut crate::store::Store| s.history(&query.device, &query.quantity, since);
    match on_store(&state, "history read", read).await {
        Ok(points) => Json::<Vec<HistoryPoint>>(points).into_response(),
        Err(response) => response,
    }
}
