//! Where the sun is, and what a clear sky can give: shared by the agent's simulator and the
//! controller's plausibility checks, so both use one model.
//!
//! Sun elevation follows the NOAA general solar position approximation (declination and
//! equation of time as Fourier series in the fractional year); the clear-sky fraction is
//! the Meinel air-mass model, `0.7^(AM^0.678)` normalised to 1 at the zenith, times
//! `sin(elevation)` for a horizontal panel. Both are approximations good to about a degree
//! and ten percent: enough to tell day from night and to bound what panels can give.

use core::f64::consts::PI;

use libm::{asin, cos, floor, pow, sin};

/// The sun's elevation above the horizon in radians at a site (degrees north and east) and
/// an instant (ms since the Unix epoch, UTC). Negative below the horizon.
pub fn sun_elevation(lat_deg: f64, lon_deg: f64, t_ms: u64) -> f64 {
    let days = t_ms as f64 / 86_400_000.0;
    // `t_ms` is never negative, so `%` is the Euclidean remainder.
    let day_of_year = floor(days % 365.2422);
    let g = 2.0 * PI / 365.0 * (day_of_year + ((t_ms / 3_600_000 % 24) as f64 - 12.0) / 24.0);
    let decl = 0.006918 - 0.399912 * cos(g) + 0.070257 * sin(g) - 0.006758 * cos(2.0 * g)
        + 0.000907 * sin(2.0 * g)
        - 0.002697 * cos(3.0 * g)
        + 0.00148 * sin(3.0 * g);
    let eqtime = 229.18
        * (0.000075 + 0.001868 * cos(g)
            - 0.032077 * sin(g)
            - 0.014615 * cos(2.0 * g)
            - 0.040849 * sin(2.0 * g));
    let minutes_utc = (t_ms % 86_400_000) as f64 / 60_000.0;
    let true_solar = minutes_utc + eqtime + 4.0 * lon_deg;
    let hour_angle = (true_solar / 4.0 - 180.0) * (PI / 180.0);
    let lat = lat_deg * (PI / 180.0);
    asin(sin(lat) * sin(decl) + cos(lat) * cos(decl) * cos(hour_angle))
}

/// The fraction (0..=1) of a panel's peak rating a clear sky gives at a sun elevation.
pub fn clear_sky_fraction(elevation: f64) -> f64 {
    if elevation <= 0.0 {
        return 0.0;
    }
    let air_mass = 1.0 / sin(elevation).max(0.05);
    (sin(elevation) * pow(0.7, pow(air_mass, 0.678)) / 0.7).clamp(0.0, 1.0)
}

/// The most (0..=1 of peak rating) a panel facing the sun can get under a clear sky at a
/// sun elevation: the air-mass attenuation alone, without the horizontal `sin(elevation)`.
/// Tilted panels in winter get far more than a horizontal one; this bound holds for any
/// orientation.
pub fn clear_sky_max_fraction(elevation: f64) -> f64 {
    if elevation <= 0.0 {
        return 0.0;
    }
    let air_mass = 1.0 / sin(elevation).max(0.05);
    (pow(0.7, pow(air_mass, 0.678)) / 0.7).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midsummer_noon_in_berlin_is_high_and_midnight_is_below_the_horizon() {
        // Solar noon on 21 June 2026 in Berlin is about 11:06 UTC: 90 - 52.5 + 23.44 = 60.9 degrees.
        let noon =
            sun_elevation(52.5, 13.4, 1_782_000_000_000 + 11 * 3_600_000 + 6 * 60_000).to_degrees();
        assert!((noon - 60.9).abs() < 1.0, "{noon}");
        let midnight = sun_elevation(52.5, 13.4, 1_782_000_000_000 + 23 * 3_600_000).to_degrees();
        assert!(midnight < -10.0, "{midnight}");
        assert_eq!(clear_sky_fraction(-0.1), 0.0);
        let f = clear_sky_fraction(noon.to_radians());
        assert!(f > 0.75 && f <= 1.0, "{f}");
        assert!((clear_sky_fraction(PI / 2.0) - 1.0).abs() < 1e-9);
        let low = 10f64.to_radians();
        assert!(
            clear_sky_max_fraction(low) > clear_sky_fraction(low),
            "a tilted panel beats a flat one"
        );
    }
}
