//! Simulated hardware that speaks the real interfaces, for tests and the `hil` command:
//! a charge controller's VE.Direct text protocol on a pseudo-terminal, a SunSpec meter or
//! inverter on Modbus TCP, a Jetson module's INA3221 hwmon and devfreq trees, all reading
//! one [`plant::Plant`] so what they say together is physically consistent.
//! docs/hil.md says how a real device replaces each.

pub mod jetson;
pub mod plant;
pub mod sunspec;
pub mod vedirect;
