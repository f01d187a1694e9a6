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

/// The process listening on TCP `port` on this machine, found through the
/// socket's inode in `/proc/net/tcp{,6}` and the processes' `/proc/{pid}/fd`
/// links; `None` when no listener or no readable owner is found (another
/// user's process needs root).
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| listening_inodes(&table, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let links: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .any(|target| {
                    target
                        .to_str()
                        .is_some_and(|t| links.iter().any(|l| l == t))
                })
        })
}

/// Inodes of the sockets in LISTEN state (`0A`) on `port` in a `/proc/net/tcp` table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let local_port = fields.get(1)?.rsplit_once(':')?.1;
            let listening = *fields.get(3)? == "0A";
            (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| fields.get(9)?.parse().ok())
                .flatten()
        })
        .collect()
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
    fn listeners_are_found_by_port_in_the_tcp_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:075B 00000000:0000 0A 00000000:00000000 00:00000000 00000000   107        0 31337 1 0 100 0 0 10 0\n\
           1: 0100007F:075B 0100007F:D1A4 01 00000000:00000000 00:00000000 00000000   107        0 4242 1 0 20 4 30 10 -1\n\
           2: 00000000:22B3 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0 100 0 0 10 0\n";
        assert_eq!(listening_inodes(table, 1883), vec![31337]);
        assert_eq!(listening_inodes(table, 8883), vec![999]);
        assert_eq!(listening_inodes(table, 1), Vec::<u64>::new());
    }

    #[test]
    fn a_listener_of_this_process_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(pid_listening_on(port), Some(std::process::id()));
    }

    #[test]
    fn this_process_can_be_read() {
        let sample = ProcessSample::read_self().unwrap();
        assert!(sample.rss_bytes > 0);
        assert!(sample.peak_rss_bytes >= sample.rss_bytes);
    }
}
