//! The declared devices and their place in the site hierarchy, shared by every source and by
//! the rule engine's binding.
//!
//! Owns: device id -> tags, and the bounded set of accepted undeclared ids. Must not touch:
//! readings.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::config::Config;
use crate::model::Tags;

/// Declared devices and where they sit in the site hierarchy.
pub struct DeviceDirectory {
    devices: HashMap<String, Tags>,
    /// Undeclared devices whose messages are accepted, up to `unknown_cap`.
    unknown: Mutex<HashSet<String>>,
    unknown_cap: usize,
}

impl DeviceDirectory {
    pub fn from_config(config: &Config) -> Self {
        let site = &config.site;
        let enterprise_park: HashMap<&str, &str> = site
            .enterprises
            .iter()
            .map(|e| (e.id.as_str(), e.park.as_str()))
            .collect();
        let location_enterprise: HashMap<&str, &str> = site
            .locations
            .iter()
            .map(|l| (l.id.as_str(), l.enterprise.as_str()))
            .collect();
        let devices = site
            .devices
            .iter()
            .map(|d| {
                let enterprise = location_enterprise
                    .get(d.location.as_str())
                    .copied()
                    .unwrap_or("");
                let park = enterprise_park.get(enterprise).copied().unwrap_or("");
                let kind = d
                    .kind
                    .clone()
                    .or_else(|| config.profiles.get(&d.profile).map(|p| p.kind.clone()))
                    .unwrap_or_default();
                let tags = Tags {
                    park: park.to_string(),
                    enterprise: enterprise.to_string(),
                    location: d.location.clone(),
                    device: d.id.clone(),
                    kind,
                    profile: d.profile.clone(),
                    extra: Vec::new(),
                };
                (d.id.clone(), tags)
            })
            .collect();
        DeviceDirectory {
            devices,
            unknown: Mutex::new(HashSet::new()),
            unknown_cap: config.site.gateway.max_unknown_devices,
        }
    }

    /// True when messages of the undeclared device `id` may be accepted: it was accepted
    /// before, or fewer than the cap are.
    pub fn admit_unknown(&self, id: &str) -> bool {
        let mut unknown = self.unknown.lock().unwrap_or_else(|e| e.into_inner());
        if unknown.contains(id) {
            return true;
        }
        if unknown.len() >= self.unknown_cap {
            return false;
        }
        unknown.insert(id.to_string());
        true
    }

    pub fn unknown_cap(&self) -> usize {
        self.unknown_cap
    }

    pub fn get(&self, id: &str) -> Option<&Tags> {
        self.devices.get(id)
    }
}
