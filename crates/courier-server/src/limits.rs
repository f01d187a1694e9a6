//! Process limits a hub with many connections needs raised.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Raises this process's soft limit on open files to its hard limit (every
/// connection is a file descriptor; distributions start processes with a soft
/// limit of 1024) and returns the limit now in force. Raising the hard limit
/// itself needs privileges: `ulimit -Hn`, or `LimitNOFILE=` under systemd.
pub fn raise_open_files() -> std::io::Result<u64> {
    let limit = getrlimit(Resource::Nofile);
    let Some(hard) = limit.maximum else {
        // No hard limit: the soft one stands (Linux never reports this for files).
        return Ok(limit.current.unwrap_or(u64::MAX));
    };
    if limit.current.is_some_and(|soft| soft >= hard) {
        return Ok(hard);
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        },
    )?;
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_reaches_the_hard_limit() {
        let raised = raise_open_files().unwrap();
        let now = getrlimit(Resource::Nofile);
        assert_eq!(now.current, Some(raised));
        assert_eq!(now.current, now.maximum);
        // A second call changes nothing.
        assert_eq!(raise_open_files().unwrap(), raised);
    }
}
