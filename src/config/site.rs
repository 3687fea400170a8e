//! The site hierarchy: `[[parks]]`, `[[enterprises]]`, `[[locations]]` and `[[devices]]`, and
//! the checks that every id is unique and every reference names something that exists.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::{alerts, References, SiteFile};

/// `[[parks]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParkConfig {
    /// Identifier, written as the `park` tag. Any UTF-8 text.
    pub id: String,
    /// Display name, shown in the web UI and alarm pushes. Absent: the `id` is shown.
    #[serde(default)]
    pub name: Option<String>,
}

/// `[[enterprises]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnterpriseConfig {
    /// Identifier, written as the `enterprise` tag.
    pub id: String,
    /// The `id` of the park it belongs to.
    pub park: String,
    /// Display name (the company's name), shown in the web UI and alarm pushes. Absent: the
    /// `id` is shown.
    #[serde(default)]
    pub name: Option<String>,
    /// The enterprise's safety contact, told by alert routes with `enterprise_contact = true`:
    /// `{ name = "...", mobile = "...", email = "..." }`.
    #[serde(default)]
    pub contact: Option<alerts::ContactConfig>,
}

/// `[[locations]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationConfig {
    /// Identifier, written as the `location` tag, e.g. `3号楼配电箱`.
    pub id: String,
    /// The `id` of the enterprise it belongs to.
    pub enterprise: String,
    /// Display name, shown in the web UI and alarm pushes. Absent: the `id` is shown.
    #[serde(default)]
    pub name: Option<String>,
}

/// `[[devices]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Identifier, written as the `device` tag. For MQTT devices it must equal the `{device}`
    /// topic level (for example the IMEI of an NB-IoT smoke detector).
    pub id: String,
    /// The `id` of the location it is installed at.
    pub location: String,
    /// Device profile (file stem in `profiles_dir`) that decodes its data.
    pub profile: String,
    /// Device kind (`meter`, `detector`, `gas`, `smoke`, ...); defaults to the profile's kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// Display name (e.g. `1号车间烟感`), shown in the web UI and alarm pushes. Absent: the
    /// `id` is shown.
    #[serde(default)]
    pub name: Option<String>,
    /// Numbers rules can scale their thresholds by (a rule's `per`), e.g.
    /// `params = { rated_current_a = 63 }` for the overcurrent rule.
    #[serde(default)]
    pub params: BTreeMap<String, f64>,
}

/// The ids of the site hierarchy, each checked to be unique, for the sections that refer to
/// them.
pub(super) struct SiteIds<'a> {
    pub parks: BTreeSet<&'a str>,
    pub enterprises: BTreeSet<&'a str>,
    pub locations: BTreeSet<&'a str>,
    pub devices: BTreeSet<&'a str>,
}

/// `[[parks]]`, `[[enterprises]]` and `[[locations]]`: unique ids, each pointing at an
/// existing parent.
pub(super) fn validate_site<'a>(
    site: &'a SiteFile,
    report: &mut dyn FnMut(String, String),
) -> SiteIds<'a> {
    let parks = unique_ids(site.parks.iter().map(|p| &p.id), "parks", report);
    let enterprises = unique_ids(
        site.enterprises.iter().map(|e| &e.id),
        "enterprises",
        report,
    );
    let locations = unique_ids(site.locations.iter().map(|l| &l.id), "locations", report);
    let devices = unique_ids(site.devices.iter().map(|d| &d.id), "devices", report);
    for (i, e) in site.enterprises.iter().enumerate() {
        if !parks.contains(e.park.as_str()) {
            report(
                format!("enterprises[{i}].park"),
                format!("no park with id `{}`", e.park),
            );
        }
    }
    for (i, l) in site.locations.iter().enumerate() {
        if !enterprises.contains(l.enterprise.as_str()) {
            report(
                format!("locations[{i}].enterprise"),
                format!("no enterprise with id `{}`", l.enterprise),
            );
        }
    }
    SiteIds {
        parks,
        enterprises,
        locations,
        devices,
    }
}

/// `[[devices]]`: each at a known location, with a known profile, named apart from the
/// gateway, with finite parameters.
pub(super) fn validate_devices(
    site: &SiteFile,
    refs: &References,
    report: &mut dyn FnMut(String, String),
) {
    for (i, d) in site.devices.iter().enumerate() {
        if !refs.ids.locations.contains(d.location.as_str()) {
            report(
                format!("devices[{i}].location"),
                format!("no location with id `{}`", d.location),
            );
        }
        if !refs.profiles.contains_key(&d.profile) {
            report(
                format!("devices[{i}].profile"),
                refs.dangling_profile(&d.profile),
            );
        }
        if d.id == site.gateway.name {
            report(
                format!("devices[{i}].id"),
                format!("`{}` is the gateway's own name (gateway.name), which its self-monitoring alarms use as their device", d.id),
            );
        }
        if d.params.values().any(|v| !v.is_finite()) {
            report(
                format!("devices[{i}].params"),
                "parameters must be finite numbers".into(),
            );
        }
    }
}

/// Reports duplicate ids and returns the set of ids.
pub(super) fn unique_ids<'a>(
    ids: impl Iterator<Item = &'a String>,
    section: &str,
    report: &mut dyn FnMut(String, String),
) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    for (i, id) in ids.enumerate() {
        if !seen.insert(id.as_str()) {
            report(format!("{section}[{i}]"), format!("duplicate id `{id}`"));
        }
    }
    seen
}
