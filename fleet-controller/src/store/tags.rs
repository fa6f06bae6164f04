//! Operators' tags on devices: free labels (`site-nairobi`, `batch-7`) the fleet list filters
//! by and bulk actions set. A tag is 1 to 32 of `a-z 0-9 - _ .`; a device has at most 16.

use std::collections::BTreeMap;

use attest::DeviceId;

use super::StoreError;

/// Most tags on one device.
pub const MAX_TAGS: usize = 16;

/// Whether `tag` is a tag (see the module documentation).
pub fn valid_tag(tag: &str) -> bool {
    (1..=32).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// The tags part of the store.
pub trait TagStore {
    /// Every device's tags, sorted.
    fn all_tags(&self) -> Result<BTreeMap<DeviceId, Vec<String>>, StoreError>;
    /// Adds `tag` to each device (one transaction); how many gained it. A device already at
    /// [`MAX_TAGS`] is skipped.
    fn add_tag(&mut self, devices: &[DeviceId], tag: &str) -> Result<usize, StoreError>;
    /// Removes `tag` from each device; how many lost it.
    fn remove_tag(&mut self, devices: &[DeviceId], tag: &str) -> Result<usize, StoreError>;
}
