//! Zones of a cluster: which zone a client belongs to (by CIDR) and which
//! live zone is nearest to another.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// One zone of the gateways' table (`[[zones]]` in the config file).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ZoneSpec {
    pub name: String,
    /// Client networks of the zone.
    #[serde(default)]
    pub cidrs: Vec<IpNet>,
    /// Where the zone is, (latitude, longitude) in degrees, to find the
    /// nearest live zone.
    #[serde(default)]
    pub location: Option<(f64, f64)>,
}

/// A table that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZoneError {
    #[error("a zone has an empty name")]
    EmptyName,
    #[error("zone {0:?} appears twice")]
    Duplicate(String),
}

/// The zones a gateway routes by.
#[derive(Debug, Clone, Default)]
pub struct ZoneTable {
    zones: Vec<ZoneSpec>,
}

impl ZoneTable {
    pub fn new(zones: Vec<ZoneSpec>) -> Result<ZoneTable, ZoneError> {
        for (i, z) in zones.iter().enumerate() {
            if z.name.is_empty() {
                return Err(ZoneError::EmptyName);
            }
            if zones[..i].iter().any(|o| o.name == z.name) {
                return Err(ZoneError::Duplicate(z.name.clone()));
            }
        }
        Ok(ZoneTable { zones })
    }

    pub fn zones(&self) -> &[ZoneSpec] {
        &self.zones
    }

    /// The zone of a client address: the most specific CIDR that holds it.
    pub fn zone_of(&self, ip: IpAddr) -> Option<&str> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.zones
            .iter()
            .flat_map(|z| z.cidrs.iter().map(move |c| (z, c)))
            .filter(|(_, c)| c.contains(&ip))
            .max_by_key(|(_, c)| c.prefix_len())
            .map(|(z, _)| z.name.as_str())
    }

    fn location(&self, zone: &str) -> Option<(f64, f64)> {
        self.zones.iter().find(|z| z.name == zone)?.location
    }

    /// Among `live` zones, the nearest to `from`: itself if live, else by
    /// great-circle distance; zones without a location come last, by name.
    pub fn nearest_live<'a>(&self, from: &str, live: &[&'a str]) -> Option<&'a str> {
        if let Some(z) = live.iter().find(|z| **z == from) {
            return Some(z);
        }
        let origin = self.location(from);
        let mut ranked: Vec<(f64, &'a str)> = live
            .iter()
            .map(|z| {
                let d = match (origin, self.location(z)) {
                    (Some(a), Some(b)) => haversine_km(a, b),
                    _ => f64::INFINITY,
                };
                (d, *z)
            })
            .collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
        ranked.first().map(|(_, z)| *z)
    }
}

/// Great-circle distance in kilometres.
fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str, cidrs: &[&str], location: Option<(f64, f64)>) -> ZoneSpec {
        ZoneSpec {
            name: name.into(),
            cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            location,
        }
    }

    fn table() -> ZoneTable {
        ZoneTable::new(vec![
            zone("eu", &["10.0.0.0/8", "2001:db8::/32"], Some((50.1, 8.7))),
            zone("eu-lab", &["10.1.0.0/16"], Some((48.9, 2.35))),
            zone("us", &["192.168.0.0/16"], Some((40.7, -74.0))),
            zone("asia", &[], Some((35.7, 139.7))),
            zone("moon", &[], None),
        ])
        .unwrap()
    }

    #[test]
    fn the_most_specific_cidr_wins_and_mapped_v4_counts_as_v4() {
        let t = table();
        assert_eq!(t.zone_of("10.2.3.4".parse().unwrap()), Some("eu"));
        assert_eq!(t.zone_of("10.1.3.4".parse().unwrap()), Some("eu-lab"));
        assert_eq!(
            t.zone_of("::ffff:10.1.3.4".parse().unwrap()),
            Some("eu-lab")
        );
        assert_eq!(t.zone_of("2001:db8::1".parse().unwrap()), Some("eu"));
        assert_eq!(t.zone_of("192.168.1.1".parse().unwrap()), Some("us"));
        assert_eq!(t.zone_of("8.8.8.8".parse().unwrap()), None);
        assert_eq!(
            ZoneTable::default().zone_of("10.0.0.1".parse().unwrap()),
            None
        );
    }

    #[test]
    fn the_nearest_live_zone_is_by_distance_then_name() {
        let t = table();
        assert_eq!(t.nearest_live("eu", &["us", "eu"]), Some("eu"));
        assert_eq!(
            t.nearest_live("eu", &["us", "eu-lab", "asia"]),
            Some("eu-lab")
        );
        assert_eq!(t.nearest_live("us", &["asia", "eu"]), Some("eu"));
        assert_eq!(t.nearest_live("eu", &["moon", "asia"]), Some("asia"));
        assert_eq!(t.nearest_live("moon", &["us", "eu"]), Some("eu"));
        assert_eq!(t.nearest_live("eu", &[]), None);
    }

    #[test]
    fn bad_tables_are_refused() {
        assert_eq!(
            ZoneTable::new(vec![zone("a", &[], None), zone("a", &[], None)]).unwrap_err(),
            ZoneError::Duplicate("a".into())
        );
        assert_eq!(
            ZoneTable::new(vec![zone("", &[], None)]).unwrap_err(),
            ZoneError::EmptyName
        );
    }
}
