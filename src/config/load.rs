//! load
pub struct LoadError;
pub fn load() {}
