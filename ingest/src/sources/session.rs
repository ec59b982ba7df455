//! The simulated session clock: a trading day from the open (or a pre-open before it) to
//! the close, then the next trading day's pre-open (no overnight). Trading days follow
//! the market calendar: weekdays that are not `holidays`, dated in the exchange's
//! `time_zone` ("today" is the exchange's today, not UTC's).
//!
//! Single names halt now and then: `halts_per_hour` volatility halts across the
//! universe per simulated hour of the regular session, each `halt_s` simulated seconds.
//!
//! The clock runs `speed` simulated seconds per wall second. Activity bursts at the open:
//! the tick rate is multiplied by `1 + (open_burst − 1)·e^(−t/burst_decay_s)`, `t` being
//! the simulated seconds since the open. Before the open (a `start` earlier than `open`)
//! the multiplier is 1, so that the open is a step up in the tick rate at a known time.

use serde::{Deserialize, Serialize};
use tickmesh_core::date::Date;
use tickmesh_core::tick::State;

/// `[sim.session]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// The simulated trading day, `YYYY-MM-DD`. Default: today in `time_zone`; a weekend
    /// or a holiday moves to the next trading day. Expiries are listed from this date.
    pub date: Option<Date>,
    /// The exchange's time zone (IANA name), which dates its days. Default
    /// `America/New_York`.
    pub time_zone: String,
    /// Days the market is closed besides weekends, `YYYY-MM-DD`: the day roll passes over
    /// them. Default none.
    pub holidays: Vec<Date>,
    /// Regular session open, `HH:MM` (exchange time). Default `09:30`.
    pub open: String,
    /// Regular session close, `HH:MM`. Default `16:00`.
    pub close: String,
    /// Time of day the simulation starts at, `HH:MM` or `HH:MM:SS`, before the close.
    /// Default: the open. A start before the open is a pre-open at the base rate (no
    /// burst) until the open, `(open − start) / speed` wall seconds later.
    pub start: Option<String>,
    /// Simulated seconds per wall second. Default 1.
    pub speed: f64,
    /// Tick-rate multiplier at the open; 1 disables the burst. Default 4.
    pub open_burst: f64,
    /// Simulated seconds over which the extra activity after the open falls by a factor
    /// of e. Default 300.
    pub burst_decay_s: f64,
    /// Simulated seconds of pre-open before each later day's open (after a close).
    /// Default 60.
    pub pre_open_s: f64,
    /// Volatility halts of single names (not indices) per simulated hour of the regular
    /// session, across the universe; 0 for none. Default 0.
    pub halts_per_hour: f64,
    /// How long a halt lasts, in simulated seconds. Default 300 (a LULD pause is five
    /// minutes).
    pub halt_s: f64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            date: None,
            time_zone: "America/New_York".into(),
            holidays: Vec::new(),
            open: "09:30".into(),
            close: "16:00".into(),
            start: None,
            speed: 1.0,
            open_burst: 4.0,
            burst_decay_s: 300.0,
            pre_open_s: 60.0,
            halts_per_hour: 0.0,
            halt_s: 300.0,
        }
    }
}

/// Seconds since midnight of `HH:MM` or `HH:MM:SS`.
pub fn parse_time(s: &str) -> Result<f64, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let field = |i: usize, max: u32| -> Result<u32, String> {
        let p = parts.get(i).copied().unwrap_or("0");
        match p.parse::<u32>() {
            Ok(v) if p.len() == 2 && v < max => Ok(v),
            _ => Err(format!("{s:?} is not a time of day (HH:MM or HH:MM:SS)")),
        }
    };
    if !(2..=3).contains(&parts.len()) {
        return Err(format!("{s:?} is not a time of day (HH:MM or HH:MM:SS)"));
    }
    let secs = if parts.len() == 3 { field(2, 60)? } else { 0 };
    Ok(f64::from(field(0, 24)? * 3600 + field(1, 60)? * 60 + secs))
}

impl SessionConfig {
    /// Checks the values; errors name the key below `sim.session`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.zone().map_err(|e| ("time_zone", e))?;
        if self.holidays.len() > 10_000 {
            return Err(("holidays", "at most 10000 days".into()));
        }
        let open = parse_time(&self.open).map_err(|e| ("open", e))?;
        let close = parse_time(&self.close).map_err(|e| ("close", e))?;
        if open >= close {
            return Err(("close", format!("{} is not after the open", self.close)));
        }
        if let Some(start) = &self.start {
            let t = parse_time(start).map_err(|e| ("start", e))?;
            if t >= close {
                return Err(("start", format!("{start} is not before the close")));
            }
        }
        if !(self.speed > 0.0 && self.speed <= 100_000.0) {
            return Err((
                "speed",
                format!("must be in (0, 100000], got {}", self.speed),
            ));
        }
        if !(1.0..=100.0).contains(&self.open_burst) {
            return Err((
                "open_burst",
                format!("must be in [1, 100], got {}", self.open_burst),
            ));
        }
        if !(self.burst_decay_s > 0.0 && self.burst_decay_s.is_finite()) {
            return Err(("burst_decay_s", "must be positive".into()));
        }
        if !(0.0..=open).contains(&self.pre_open_s) {
            return Err((
                "pre_open_s",
                format!(
                    "must be in [0, the open's seconds since midnight], got {}",
                    self.pre_open_s
                ),
            ));
        }
        if !(0.0..=3600.0).contains(&self.halts_per_hour) {
            return Err((
                "halts_per_hour",
                format!("must be in [0, 3600], got {}", self.halts_per_hour),
            ));
        }
        if !(self.halt_s >= 1.0 && self.halt_s <= close - open) {
            return Err((
                "halt_s",
                format!(
                    "must be in [1, the session's length in seconds], got {}",
                    self.halt_s
                ),
            ));
        }
        Ok(())
    }
}

impl SessionConfig {
    fn zone(&self) -> Result<jiff::tz::TimeZone, String> {
        jiff::tz::TimeZone::get(&self.time_zone)
            .map_err(|_| format!("{:?} is not an IANA time zone", self.time_zone))
    }

    /// Today in the exchange's time zone, at `unix_us` (µs since the Unix epoch).
    pub fn today(&self, unix_us: u64) -> Date {
        let utc = Date::from_unix_us(unix_us);
        let Ok(zone) = self.zone() else { return utc };
        let Ok(at) = jiff::Timestamp::from_microsecond(unix_us as i64) else {
            return utc;
        };
        let d = at.to_zoned(zone).date();
        Date::new(i32::from(d.year()), d.month() as u32, d.day() as u32).unwrap_or(utc)
    }
}

/// The first trading day from `date` on: not a weekend, not one of `holidays`.
pub fn trading_day(date: Date, holidays: &[Date]) -> Date {
    let mut d = date;
    while d.is_weekend() || holidays.contains(&d) {
        d = d.add_days(1);
    }
    d
}

/// Where the simulated market is in its day.
#[derive(Debug, Clone)]
pub struct SessionClock {
    date: Date,
    holidays: Vec<Date>,
    open: f64,
    close: f64,
    /// Seconds since midnight.
    secs: f64,
    speed: f64,
    burst: f64,
    decay: f64,
    pre_open: f64,
}

impl SessionClock {
    /// A clock on `config.date` (or `today`), validated beforehand.
    pub fn new(config: &SessionConfig, today: Date) -> Self {
        let open = parse_time(&config.open).unwrap_or(34_200.0);
        let close = parse_time(&config.close).unwrap_or(57_600.0);
        let start = config
            .start
            .as_deref()
            .and_then(|s| parse_time(s).ok())
            .unwrap_or(open);
        SessionClock {
            date: trading_day(config.date.unwrap_or(today), &config.holidays),
            holidays: config.holidays.clone(),
            open,
            close,
            secs: start,
            speed: config.speed,
            burst: config.open_burst,
            decay: config.burst_decay_s,
            pre_open: config.pre_open_s,
        }
    }

    pub fn date(&self) -> Date {
        self.date
    }

    /// The market's holidays.
    pub fn holidays(&self) -> &[Date] {
        &self.holidays
    }

    /// Seconds since midnight, simulated.
    pub fn secs(&self) -> f64 {
        self.secs
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// Length of the regular session, in seconds.
    pub fn session_secs(&self) -> f64 {
        self.close - self.open
    }

    /// The tick-rate multiplier now: 1 before the open, `open_burst` at the open, decaying
    /// towards 1.
    pub fn activity(&self) -> f64 {
        let since_open = self.secs - self.open;
        if self.burst == 1.0 || !(0.0..=40.0 * self.decay).contains(&since_open) {
            return 1.0;
        }
        1.0 + (self.burst - 1.0) * (-since_open / self.decay).exp()
    }

    /// Pre-open before the open, open until the close.
    pub fn phase(&self) -> State {
        match self.secs < self.open {
            true => State::PreOpen,
            false => State::Open,
        }
    }

    /// Advances by `wall` seconds of real time. Returns true when the session closed and
    /// the clock moved to the next trading day's pre-open.
    pub fn advance(&mut self, wall: f64) -> bool {
        self.secs += wall * self.speed;
        if self.secs < self.close {
            return false;
        }
        self.date = trading_day(self.date.add_days(1), &self.holidays);
        self.secs = self.open - self.pre_open;
        true
    }

    /// Years (of 365 days) until the close of `expiry`; at least one minute's worth, so
    /// that an option expiring today still has a price.
    pub fn years_to_close_of(&self, expiry: Date) -> f64 {
        let secs = (expiry.days() - self.date.days()) as f64 * 86_400.0 + self.close - self.secs;
        secs.max(60.0) / (365.0 * 86_400.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Date {
        Date::parse(s).unwrap()
    }

    #[test]
    fn the_calendar_dates_days_in_the_exchanges_zone_and_passes_over_holidays() {
        let c = SessionConfig {
            holidays: vec![day("2026-12-25"), day("2027-01-01")],
            ..SessionConfig::default()
        };
        // 03:00 UTC on Tuesday the 8th is still Monday the 7th in New York.
        assert_eq!(c.today(1_796_698_800_000_000), day("2026-12-07"));
        let tokyo = SessionConfig {
            time_zone: "Asia/Tokyo".into(),
            ..SessionConfig::default()
        };
        assert_eq!(tokyo.today(1_796_698_800_000_000), day("2026-12-08"));
        assert_eq!(
            trading_day(day("2026-12-25"), &c.holidays),
            day("2026-12-28")
        );
        // Thursday the 24th rolls to Monday the 28th: Christmas, then the weekend.
        let mut clock = SessionClock::new(
            &SessionConfig {
                date: Some(day("2026-12-24")),
                start: Some("15:59:00".into()),
                ..c.clone()
            },
            day("2026-12-24"),
        );
        assert!(clock.advance(61.0));
        assert_eq!(clock.date(), day("2026-12-28"));
        // And the 31st to Monday 2027-01-04.
        let mut clock = SessionClock::new(
            &SessionConfig {
                date: Some(day("2026-12-31")),
                start: Some("15:59:00".into()),
                ..c
            },
            day("2026-12-31"),
        );
        assert!(clock.advance(61.0));
        assert_eq!(clock.date(), day("2027-01-04"));
        let bad = SessionConfig {
            time_zone: "Mars/Olympus_Mons".into(),
            ..SessionConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "time_zone");
    }

    #[test]
    fn times_parse_strictly() {
        assert_eq!(parse_time("09:30").unwrap(), 34_200.0);
        assert_eq!(parse_time("15:59:50").unwrap(), 57_590.0);
        for bad in ["9:30", "24:00", "09:60", "09", "09:30:00:00", "ab:cd"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        let c = SessionConfig {
            start: Some("16:00".into()),
            ..SessionConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "start");
    }

    #[test]
    fn a_pre_open_runs_at_the_base_rate_until_the_open_steps_it_up() {
        let config = SessionConfig {
            start: Some("09:29:50".into()),
            open_burst: 10.0,
            burst_decay_s: 1e6,
            ..SessionConfig::default()
        };
        assert!(config.validate().is_ok());
        let mut clock = SessionClock::new(&config, day("2026-03-02"));
        assert_eq!(clock.activity(), 1.0);
        clock.advance(9.9);
        assert_eq!(clock.activity(), 1.0);
        clock.advance(0.1);
        assert!((clock.activity() - 10.0).abs() < 1e-9);
        clock.advance(30.0);
        assert!(clock.activity() > 9.99);
    }

    #[test]
    fn the_open_bursts_then_calms_down() {
        let mut clock = SessionClock::new(&SessionConfig::default(), day("2026-03-02"));
        assert!((clock.activity() - 4.0).abs() < 1e-12);
        clock.advance(300.0);
        assert!((clock.activity() - (1.0 + 3.0 / std::f64::consts::E)).abs() < 1e-9);
        clock.advance(3_600.0);
        assert!(clock.activity() < 1.001);
    }

    #[test]
    fn the_close_rolls_to_the_next_weekday() {
        let config = SessionConfig {
            start: Some("15:59:00".into()),
            speed: 60.0,
            ..SessionConfig::default()
        };
        // 2026-03-06 is a Friday; Saturday's date moves to Monday.
        let mut clock = SessionClock::new(&config, day("2026-03-06"));
        assert!(!clock.advance(0.5));
        assert_eq!(clock.phase(), State::Open);
        assert!(clock.advance(0.6));
        assert_eq!(clock.date(), day("2026-03-09"));
        assert_eq!(clock.secs(), 34_200.0 - 60.0);
        assert_eq!(clock.phase(), State::PreOpen);
        clock.advance(1.0);
        assert_eq!(clock.phase(), State::Open);
        assert_eq!(
            SessionClock::new(&config, day("2026-03-07")).date(),
            day("2026-03-09")
        );
    }

    #[test]
    fn time_to_expiry_counts_to_the_close() {
        let clock = SessionClock::new(&SessionConfig::default(), day("2026-03-02"));
        let t = clock.years_to_close_of(day("2026-03-06"));
        let want = (4.0 * 86_400.0 + 6.5 * 3600.0) / (365.0 * 86_400.0);
        assert!((t - want).abs() < 1e-12);
        assert!(clock.years_to_close_of(day("2026-02-27")) > 0.0);
    }
}
