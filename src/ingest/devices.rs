//! The declared devices and their place in the site hierarchy, shared by every source.

use std::collections::HashMap;

use crate::config::Config;
use crate::model::Tags;

/// Declared devices and where they sit in the site hierarchy.
pub struct DeviceDirectory {
    devices: HashMap<String, Tags>,
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
        DeviceDirectory { devices }
    }

    pub fn get(&self, id: &str) -> Option<&Tags> {
        self.devices.get(id)
    }
}
