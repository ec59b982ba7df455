//! CPU and RSS of a process, from /proc.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system, all threads) of `pid` so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    // Fields 14 and 15 of the file are the 12th and 13th after the name.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// The machine's CPU time so far, from /proc/stat: (busy, steal) in seconds over all
/// cores. Busy is user + nice + system + irq + softirq.
pub fn machine_cpu() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0.0);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6);
    Some((busy / USER_HZ, get(7) / USER_HZ))
}

/// The 1-minute load average.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Resident set size of `pid`, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Tracks the highest RSS of some processes with a background thread.
#[derive(Debug, Clone)]
pub struct RssWatch {
    max: Arc<Mutex<Vec<u64>>>,
}

impl RssWatch {
    pub fn start(pids: Vec<u32>, stop: Arc<std::sync::atomic::AtomicBool>) -> Self {
        let max = Arc::new(Mutex::new(vec![0; pids.len()]));
        let m = max.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, &pid) in pids.iter().enumerate() {
                    if let Some(rss) = rss_kib(pid) {
                        let mut v = m.lock().unwrap_or_else(|e| e.into_inner());
                        v[i] = v[i].max(rss);
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        RssWatch { max }
    }

    pub fn max(&self) -> Vec<u64> {
        self.max.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        let before = cpu_seconds(pid).unwrap();
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds(pid).unwrap() > before);
    }
}
