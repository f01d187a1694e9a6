//! A process's CPU time and memory, read from Linux's `/proc`.

use std::time::Duration;

use serde::Serialize;

/// Clock ticks per second of `/proc/{pid}/stat` times: USER_HZ, which Linux
/// fixes at 100 for user space on every architecture Courier runs on.
const TICKS_PER_SECOND: u64 = 100;

/// Why a process could not be sampled.
#[derive(Debug, thiserror::Error)]
pub enum ProcessSampleError {
    /// The `/proc` file could not be read (no such process, or not Linux).
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not have the expected shape.
    #[error("{path} has no readable {field}")]
    Parse {
        /// The file.
        path: String,
        /// The field looked for.
        field: &'static str,
    },
}

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessSample {
    /// User plus system CPU time since the process started.
    #[serde(serialize_with = "seconds")]
    pub cpu: Duration,
    /// Resident set size now, in bytes (VmRSS).
    pub rss_bytes: u64,
    /// Highest resident set size since the process started, in bytes (VmHWM).
    pub peak_rss_bytes: u64,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl ProcessSample {
    /// Reads `/proc/{pid}/stat` and `/proc/{pid}/status`.
    pub fn read(pid: u32) -> Result<Self, ProcessSampleError> {
        Self::read_at(&format!("/proc/{pid}"))
    }

    /// Reads the process running this code.
    pub fn read_self() -> Result<Self, ProcessSampleError> {
        Self::read_at("/proc/self")
    }

    fn read_at(dir: &str) -> Result<Self, ProcessSampleError> {
        let stat_path = format!("{dir}/stat");
        let status_path = format!("{dir}/status");
        let read = |path: &str| {
            std::fs::read_to_string(path).map_err(|source| ProcessSampleError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let cpu = cpu_time(&read(&stat_path)?).ok_or(ProcessSampleError::Parse {
            path: stat_path,
            field: "utime and stime",
        })?;
        let status = read(&status_path)?;
        let field = |name: &'static str| {
            status_kib(&status, name)
                .map(|kib| kib * 1024)
                .ok_or_else(|| ProcessSampleError::Parse {
                    path: status_path.clone(),
                    field: name,
                })
        };
        Ok(Self {
            cpu,
            rss_bytes: field("VmRSS")?,
            peak_rss_bytes: field("VmHWM")?,
        })
    }
}

/// utime + stime from a `/proc/{pid}/stat` line. The command name (field 2)
/// is in parentheses and may itself hold spaces and parentheses, so fields
/// are counted from the last `)`.
fn cpu_time(stat: &str) -> Option<Duration> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, utime field 14, stime field 15.
    let mut fields = after_name.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime.checked_add(stime)?;
    Some(Duration::from_millis(
        ticks.checked_mul(1000 / TICKS_PER_SECOND)?,
    ))
}

/// The value of a `Name:   123 kB` line of `/proc/{pid}/status`.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_utime_plus_stime_counted_after_the_command_name() {
        let stat = "4242 (cour) ier (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 75 0 0 20 0 9 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(cpu_time(stat), Some(Duration::from_millis(3250)));
        assert_eq!(cpu_time("4242 (courier) S 1 2"), None);
    }

    #[test]
    fn status_lines_give_kibibytes() {
        let status = "Name:\tcourier\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(10240));
        assert_eq!(status_kib(status, "VmHWM"), Some(20480));
        assert_eq!(status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let sample = ProcessSample::read_self().unwrap();
        assert!(sample.rss_bytes > 0);
        assert!(sample.peak_rss_bytes >= sample.rss_bytes);
    }
}
